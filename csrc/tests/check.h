/*
 * check.h - the assertions of the C tests: CHECK and CHECK_EQ count passes
 * and failures in g_pass and g_fail and report each failure with its line;
 * the test keeps going.  Included once, by each test program.
 */
#ifndef FC_TESTS_CHECK_H
#define FC_TESTS_CHECK_H

#include <stdio.h>

static long g_pass, g_fail;

#define CHECK(expr)                                                                  \
    do {                                                                             \
        if (expr)                                                                    \
            g_pass++;                                                                \
        else {                                                                       \
            g_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
        }                                                                            \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    do {                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                \
        if (a_ == b_)                                                                      \
            g_pass++;                                                                      \
        else {                                                                             \
            g_fail++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", __FILE__, \
                    __LINE__, #a, #b, a_, b_);                                             \
        }                                                                                  \
    } while (0)

#endif /* FC_TESTS_CHECK_H */
