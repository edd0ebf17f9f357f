/* Includes the kernel file named by BODY once per precision, so that one text gives both:
   REAL float, SUFFIX f32, IS_F64 0, then REAL double, SUFFIX f64, IS_F64 1. FN(name) appends
   the suffix (name_f32, name_f64). A kernel file includes this where REAL is not yet defined
   and holds its body in the #else branch. */

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name, SUFFIX)

#define REAL float
#define SUFFIX f32
#define IS_F64 0
#include BODY
#undef REAL
#undef SUFFIX
#undef IS_F64

#define REAL double
#define SUFFIX f64
#define IS_F64 1
#include BODY
#undef REAL
#undef SUFFIX
#undef IS_F64
