// blocking.h — runs blocking work (file writes, fsync) on a thread pool and
// resumes the calling coroutine on its own executor afterwards.
//
// A worker thread serves many sessions; one fsync on it would stall them all.
// On the pool, many sessions' fsyncs run at once and the file system commits
// them together (group commit), instead of one after another.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>

namespace mk {

template <class F>
boost::asio::awaitable<std::invoke_result_t<F&>> run_blocking(boost::asio::any_io_executor pool, F f) {
  using Result = std::invoke_result_t<F&>;
  // `f` lives in this frame, which outlives the spawned coroutine.
  co_return co_await boost::asio::co_spawn(
      pool, [&f]() -> boost::asio::awaitable<Result> { co_return f(); }, boost::asio::use_awaitable);
}

}  // namespace mk
