// manpage.h — mailkeep(8) and mailkeep.ini(5), generated (`mailkeep man-page
// 8|5`, run by the build) from the command-line definition and the settings
// table, so that neither page can miss a command, an option or a key.
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace mk::app {

std::string man_page_commands(const CLI::App& app);  // mailkeep(8)
std::string man_page_config();                        // mailkeep.ini(5)

}  // namespace mk::app
