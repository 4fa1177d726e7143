//! Network intake: the syslog receivers (UDP, TCP, TLS).
