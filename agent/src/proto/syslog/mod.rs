//! Syslog: parser, framing and the `parse-syslog` command.
