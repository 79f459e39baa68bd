// json_impl.cpp — Boost.JSON compiled once, here (library mk_json) (header-only mode; Debian
// ships no separate libboost-json for 1.81 in our package set).
#include <boost/json/src.hpp>
