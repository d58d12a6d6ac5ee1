/* Lint-only stand-in (see TargetConditionals.h). */
#pragma once
#include <stddef.h>
void abort(void);
