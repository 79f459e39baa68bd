// outcome.h — the three-way result every lookup and delivery step returns.
//
// Ok / TempFail / PermFail map straight onto SMTP's 2xx / 4xx / 5xx
// (OpenSMTPD's lookup results). A timeout or any "can't be sure" is TempFail,
// never PermFail: the sender must retry rather than bounce.
#pragma once

namespace mk {

enum class Outcome { Ok, TempFail, PermFail };

}  // namespace mk
