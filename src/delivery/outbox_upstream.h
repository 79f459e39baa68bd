// outbox_upstream.h — the upstream used when no smarthost is configured:
// accepts every recipient and writes each message into the outbox Maildir
// (durably: tmp/ → fsync → new/), so a newcomer sees the whole path work
// without an MTA. The envelope is kept as Return-Path and X-Original-To
// header lines at the top of the file.
#pragma once
#include "delivery/upstream.h"

namespace mk::delivery {

// `blocking`: the pool the Maildir write and fsync run on (core/blocking.h).
std::unique_ptr<UpstreamFactory> make_outbox_upstream_factory(std::string maildir,
                                                              boost::asio::any_io_executor blocking);

}  // namespace mk::delivery
