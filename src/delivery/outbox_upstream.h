// outbox_upstream.h — the upstream used when no smarthost is configured:
// accepts every recipient and writes each message into the outbox Maildir
// (durably: tmp/ → fsync → new/), so a newcomer sees the whole path work
// without an MTA. The envelope is kept as Return-Path and X-Original-To
// header lines at the top of the file (replay/journal.h reads them back).
#pragma once
#include "delivery/upstream.h"

namespace mk::delivery {

// `blocking`: the pool the Maildir write and fsync run on (core/blocking.h).
std::unique_ptr<UpstreamFactory> make_outbox_upstream_factory(std::string maildir,
                                                              boost::asio::any_io_executor blocking);

// Standalone mode's upstream ([backup] standalone): the archive copies are
// the delivery, and this journal ([backup] replay) records every message for
// `mailkeep backup replay` — one file per recipient, so that a replay for one
// user never touches another's. Same file format as the outbox.
std::unique_ptr<UpstreamFactory> make_replay_journal_factory(std::string maildir,
                                                             boost::asio::any_io_executor blocking);

}  // namespace mk::delivery
