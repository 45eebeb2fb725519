// Built into every executable of a sanitizer build (see src/CMakeLists.txt),
// never into a release build.

// The sanitizer runtime of GCC up to 13 (and LLVM up to 16) records a dynamic
// TLS block from its __tls_get_addr interceptor and, when the block's address
// is 16 bytes past a page boundary, takes the two words before it for a
// pre-2.25 glibc header holding the block's real start and size.  glibc 2.25
// and later have no such header, so a malloc'ed block that lands there by
// chance is recorded with a garbage range, and LeakSanitizer's tracer then
// faults scanning it at exit ("Tracer caught signal 11").  Whether it happens
// depends only on where the allocator places the block of a dlopen'ed library
// (libcurl, GnuTLS), so any unrelated change can turn it on or off.  Not
// intercepting __tls_get_addr avoids it; the cost is that dynamic TLS is not
// scanned for pointers, which can only add false leak reports, never hide
// one.  ASAN_OPTIONS from the environment still override this.
extern "C" const char* __asan_default_options() { return "intercept_tls_get_addr=0"; }
