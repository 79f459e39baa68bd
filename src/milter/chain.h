// chain.h — the milters of [milter] smtp as the session's pre-acceptance
// stage (smtp/checks.h): one Connection per milter per SMTP session, each
// SMTP step sent to each milter in order, and their answers turned into
// what the session does.
//
// What a milter's answer means (Postfix's smtpd_milters semantics):
//   continue → the next milter; accept → this milter is done for the
//   message (for the connection, at connect or HELO); reject → 550 5.7.1
//   (554 as a greeting); tempfail → 451 4.7.1 (421 as a greeting);
//   replycode → the milter's own reply; discard → 250, delivered nowhere;
//   quarantine → 250, kept out of the upstream and filed as junk;
//   shutdown → 421.
// A milter that is down, stalls or breaks the protocol follows
// [milter] default_action for the rest of the session, and the log names it.
// At end of message the milters run one after the other, each on the
// message as the ones before it left it (Sendmail's order), so OpenDMARC
// sees OpenDKIM's Authentication-Results.
// Offered actions: header edits, body replacement, quarantine, and the
// envelope: add (with or without ESMTP args) and delete recipient, change
// sender, each handed to the session (smtp::EnvelopeChange) to route.
#pragma once
#include <memory>
#include <string>

#include "config/settings.h"
#include "smtp/checks.h"

namespace mk::milter {

// Offered to every milter (SMFIF_*).
uint32_t offered_actions();

// The factory main() hands the SMTP servers; null create() result when
// [milter] smtp is empty, or for outbound clients without [milter] outbound.
smtp::SessionChecksFactory make_factory(const Settings& settings);

}  // namespace mk::milter
