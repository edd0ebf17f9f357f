/* Includes the kernel file named by BODY once per precision, so that one text gives both:
   REAL float, SUFFIX f32, IS_F64 0, then REAL double, SUFFIX f64, IS_F64 1. FN(name) appends
   the suffix (name_f32, name_f64). With -DHNB_PRECISION=32 (or 64) only that one: cpu_build
   compiles a kernel's double library when a float64 tensor first needs it. A kernel file
   includes this where REAL is not yet defined and holds its body in the #else branch. */

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)

#if !defined(HNB_PRECISION) || HNB_PRECISION == 32
#define REAL float
#define SUFFIX f32
#define IS_F64 0
#include BODY
#undef REAL
#undef SUFFIX
#undef IS_F64
#endif

#if !defined(HNB_PRECISION) || HNB_PRECISION == 64
#define REAL double
#define SUFFIX f64
#define IS_F64 1
#include BODY
#undef REAL
#undef SUFFIX
#undef IS_F64
#endif
