/* common/log.h: structured log lines on stderr (docs/logging.md) and the setup-log accumulator. */
#ifndef COGLET_LOG_H
#define COGLET_LOG_H

#include <jansson.h>

typedef enum { LOG_TRACE = 0, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Reads COG_LOG_LEVEL / RUST_LOG (level only) and LOG_FORMAT. Idempotent. */
void log_init(void);
int log_enabled(log_level level, const char *target);
log_level log_level_parse(const char *s, log_level fallback);
const char *log_level_name(log_level level); /* "INFO" */

/* fields: an object of extra structured fields, stolen (may be NULL). */
void log_event(log_level level, const char *target, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void log_event_str(log_level level, const char *target, json_t *fields, const char *message);

#define log_info(target, ...) log_event(LOG_INFO, target, NULL, __VA_ARGS__)
#define log_warn(target, ...) log_event(LOG_WARN, target, NULL, __VA_ARGS__)
#define log_error(target, ...) log_event(LOG_ERROR, target, NULL, __VA_ARGS__)
#define log_debug(target, ...) log_event(LOG_DEBUG, target, NULL, __VA_ARGS__)

/* Setup logs: between begin and take, every emitted line is also kept as
 * "[{target}] {message}\n". take returns the text (malloc'd) and stops collecting. */
void log_capture_begin(void);
char *log_capture_take(void);

#endif
