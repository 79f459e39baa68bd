// data_reader.h — the DATA phase decoder: a byte-at-a-time state machine that
// turns the dot-stuffed wire form into message content, in chunks of any size.
//
// Standards: RFC 5321 4.1.1.4 (end of data is <CRLF>.<CRLF>), 4.5.2
// (transparency: a leading dot is removed), 2.3.8 (CR and LF only as CRLF).
// Only <CRLF>.<CRLF> ends DATA: "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n" do not
// (SMTP smuggling, CVE-2023-51764 class). A bare CR or LF or a NUL marks the
// message as bad; the caller rejects it once the real end arrives, so that
// nothing after a fake end can be read as a command.
// Line length is not limited here: long lines pass unchanged (DKIM), and the
// caller bounds memory by spilling to a file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mk::smtp {

class DataDecoder {
 public:
  enum class Defect { None, BareLineFeed, BareCarriageReturn, Nul };

  // Consumes bytes from `in` until the end-of-data marker or the end of input.
  // Content bytes are passed to `out(std::string_view)` in runs. Returns the
  // number of bytes consumed; when finished() the remaining bytes belong to
  // the next command (pipelining).
  template <class Out>
  size_t feed(std::string_view in, Out&& out);

  bool finished() const { return state_ == State::Done; }
  Defect defect() const { return defect_; }
  uint64_t content_size() const { return size_; }

 private:
  enum class State { LineStart, InLine, SawCr, Dot, DotCr, Done };
  void mark(Defect d) {
    if (defect_ == Defect::None) defect_ = d;
  }
  State state_ = State::LineStart;
  Defect defect_ = Defect::None;
  uint64_t size_ = 0;
};

template <class Out>
size_t DataDecoder::feed(std::string_view in, Out&& out) {
  size_t i = 0;
  size_t run = 0;  // start of the pending run of content bytes in `in`
  auto flush = [&](size_t end) {
    if (end > run) {
      out(in.substr(run, end - run));
      size_ += end - run;
      run = end;
    }
  };
  while (i < in.size() && state_ != State::Done) {
    char c = in[i];
    switch (state_) {
      case State::LineStart:
        if (c == '.') {
          flush(i);
          state_ = State::Dot;
          run = i + 1;  // the stuffed dot is dropped (RFC 5321 4.5.2)
          ++i;
          continue;
        }
        state_ = State::InLine;
        continue;  // re-examine c in InLine
      case State::InLine:
        // Fast path: ordinary bytes.
        while (i < in.size() && in[i] != '\r' && in[i] != '\n' && in[i] != '\0') ++i;
        if (i == in.size()) continue;
        c = in[i];
        if (c == '\r') state_ = State::SawCr;
        else if (c == '\n') mark(Defect::BareLineFeed);  // stays InLine: a bare LF never starts a line
        else mark(Defect::Nul);
        ++i;
        continue;
      case State::SawCr:
        if (c == '\n') {
          state_ = State::LineStart;
        } else if (c == '\r') {
          mark(Defect::BareCarriageReturn);
        } else {
          mark(Defect::BareCarriageReturn);
          state_ = State::InLine;
          continue;
        }
        ++i;
        continue;
      case State::Dot:
        if (c == '\r') {
          state_ = State::DotCr;
          ++i;
          continue;
        }
        state_ = State::InLine;  // ".text": the dot was stuffing; `c` is content
        continue;
      case State::DotCr:
        if (c == '\n') {
          state_ = State::Done;
          ++i;
          run = i;  // nothing of ".\r\n" is content
          return i;
        }
        // ".\r" then something else: the dot was stuffing, the CR is bare.
        // Emit the CR we held back, then treat c as content.
        out(std::string_view("\r", 1));
        ++size_;
        mark(Defect::BareCarriageReturn);
        run = i;
        state_ = State::InLine;
        continue;
      case State::Done:
        break;
    }
  }
  // The CR of an unfinished ".\r" is held back until we know what follows;
  // it is this chunk's last byte, unless the chunk was empty.
  if (state_ == State::DotCr) flush(i > 0 ? i - 1 : 0);
  else flush(i);
  return i;
}

}  // namespace mk::smtp
