//! nginx processes of the tests' own (Debian `nginx`), on free loopback
//! ports, running the shipped `deploy/nginx.conf`.
