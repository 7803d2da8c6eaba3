#ifndef SLUICE_CLIBPQ_SHIM_H
#define SLUICE_CLIBPQ_SHIM_H
#include <libpq-fe.h>

// Swift imports only numeric and string macros; libpq's error-field codes are character literals.
static const int sluice_diag_sqlstate = PG_DIAG_SQLSTATE;
static const int sluice_diag_message_primary = PG_DIAG_MESSAGE_PRIMARY;
static const int sluice_diag_message_detail = PG_DIAG_MESSAGE_DETAIL;
static const int sluice_diag_message_hint = PG_DIAG_MESSAGE_HINT;
#endif
