// System zlib for Swift (apt: zlib1g-dev). No logic belongs here.
#include <zlib.h>
