/* common/bignum.c: integers of any size (see bignum.h). Everything works on decimal text:
 * comparisons by sign, length and digits, a real bound compared through its exact integer
 * part, divisibility by long division, sums digit by digit. */
#include "common/bignum.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An integer as sign + magnitude digits (canonical: no leading zero, zero is "0", never -0). */
typedef struct dec {
    int neg;
    const char *d;
    size_t n;
    char tmp[24]; /* the digits of an int64 */
} dec;

static void dec_of_int(dec *x, json_int_t i) {
    int len = snprintf(x->tmp, sizeof x->tmp, "%" JSON_INTEGER_FORMAT, i);
    x->neg = x->tmp[0] == '-';
    x->d = x->tmp + x->neg;
    x->n = (size_t)len - (size_t)x->neg;
}

/* v: an integer or a bignum. */
static void dec_of(dec *x, const json_t *v) {
    if (json_is_integer(v)) {
        dec_of_int(x, json_integer_value(v));
        return;
    }
    const char *s = json_string_value(v) + 1;
    x->neg = *s == '-';
    x->d = s + x->neg;
    x->n = json_string_length(v) - 1 - (size_t)x->neg;
}

static int mag_cmp(const char *a, size_t an, const char *b, size_t bn) {
    if (an != bn)
        return an < bn ? -1 : 1;
    int c = memcmp(a, b, an);
    return (c > 0) - (c < 0);
}

static int dec_is_zero(const dec *x) { return x->n == 1 && x->d[0] == '0'; }

static int dec_cmp(const dec *a, const dec *b) {
    if (a->neg != b->neg)
        return a->neg ? -1 : 1;
    int c = mag_cmp(a->d, a->n, b->d, b->n);
    return a->neg ? -c : c;
}

json_t *bignum_from_text(const char *text, size_t len) {
    size_t neg = len && text[0] == '-';
    const char *d = text + neg;
    size_t n = len - neg;
    if (!n || (d[0] == '0' && n > 1) || (neg && n == 1 && d[0] == '0'))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (d[i] < '0' || d[i] > '9')
            return NULL;
    /* int64: up to 9223372036854775807, down to -9223372036854775808 */
    static const char max[] = "9223372036854775807", min[] = "9223372036854775808";
    if (n < 19 || (n == 19 && mag_cmp(d, n, neg ? min : max, 19) <= 0)) {
        uint64_t u = 0;
        for (size_t i = 0; i < n; i++)
            u = u * 10 + (uint64_t)(d[i] - '0');
        return json_integer(neg ? (json_int_t)(0 - u) : (json_int_t)u);
    }
    char *s = malloc(len + 2);
    if (!s)
        return NULL;
    s[0] = '\0';
    memcpy(s + 1, text, len);
    s[len + 1] = '\0';
    json_t *v = json_stringn_nocheck(s, len + 1);
    free(s);
    return v;
}

const char *bignum_text(const json_t *v, size_t *len) {
    if (!bignum_is(v))
        return NULL;
    if (len)
        *len = json_string_length(v) - 1;
    return json_string_value(v) + 1;
}

double bignum_to_double(const json_t *v) {
    if (bignum_is(v))
        return strtod(json_string_value(v) + 1, NULL);
    return json_number_value(v);
}

int bignum_sign(const json_t *v) {
    if (bignum_is(v))
        return json_string_value(v)[1] == '-' ? -1 : 1;
    if (json_is_integer(v))
        return (json_integer_value(v) > 0) - (json_integer_value(v) < 0);
    double d = json_number_value(v);
    return (d > 0) - (d < 0);
}

/* An int64 against a finite double: through floor(d), which is an int64 when |d| < 2^63. */
static int cmp_int_real(json_int_t i, double d) {
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double f = floor(d);
    json_int_t fi = (json_int_t)f;
    if (i != fi)
        return i < fi ? -1 : 1;
    return d > f ? -1 : 0;
}

/* An integer (as text) against a finite double: the double's integer part printed exactly
 * (%.0f is exact for a whole double), then its fraction. */
static int cmp_dec_real(const dec *x, double d) {
    double f = floor(d);
    char text[400];
    dec y;
    snprintf(text, sizeof text, "%.0f", f == 0 ? 0.0 : f);
    y.neg = text[0] == '-';
    y.d = text + y.neg;
    y.n = strlen(y.d);
    int c = dec_cmp(x, &y);
    if (c)
        return c;
    return d > f ? -1 : 0;
}

int bignum_cmp(const json_t *a, const json_t *b) {
    int ai = bignum_is_integer(a), bi = bignum_is_integer(b);
    if (!ai && !bi) {
        double x = json_real_value(a), y = json_real_value(b);
        return (x > y) - (x < y);
    }
    if (!ai)
        return -bignum_cmp(b, a);
    /* a is an integer */
    if (!bi) {
        if (json_is_integer(a))
            return cmp_int_real(json_integer_value(a), json_real_value(b));
        dec x;
        dec_of(&x, a);
        return cmp_dec_real(&x, json_real_value(b));
    }
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    dec x, y;
    dec_of(&x, a);
    dec_of(&y, b);
    return dec_cmp(&x, &y);
}

/* ---- divisibility: long division, in base 10^9 limbs for a big divisor ---- */

#define LIMB_BASE 1000000000u

/* Limbs of a decimal magnitude, least significant first; *n of them. */
static uint32_t *limbs_of(const char *d, size_t len, size_t *n) {
    size_t count = (len + 8) / 9;
    uint32_t *l = calloc(count + 1, sizeof *l);
    if (!l)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        size_t end = len - 9 * i, start = end > 9 ? end - 9 : 0;
        uint32_t v = 0;
        for (size_t k = start; k < end; k++)
            v = v * 10 + (uint32_t)(d[k] - '0');
        l[i] = v;
    }
    *n = count;
    return l;
}

static int limbs_cmp(const uint32_t *a, const uint32_t *b, size_t n) {
    for (size_t i = n; i-- > 0;)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}

/* x mod m == 0 for magnitudes x, m (m not zero). */
static int mag_divisible(const char *x, size_t xn, const char *m, size_t mn) {
    if (mn <= 18) {
        uint64_t mv = 0, r = 0;
        for (size_t i = 0; i < mn; i++)
            mv = mv * 10 + (uint64_t)(m[i] - '0');
        for (size_t i = 0; i < xn; i++)
            r = (r * 10 + (uint64_t)(x[i] - '0')) % mv; /* r < 10^18: r * 10 + 9 fits */
        return r == 0;
    }
    size_t n;
    uint32_t *ml = limbs_of(m, mn, &n);
    uint32_t *r = ml ? calloc(n + 1, sizeof *r) : NULL;
    if (!r) {
        free(ml);
        return -1;
    }
    ml[n] = 0;
    for (size_t i = 0; i < xn; i++) {
        /* r = r * 10 + digit: below 10 m, so at most nine subtractions bring it under m */
        uint64_t carry = (uint64_t)(x[i] - '0');
        for (size_t k = 0; k <= n; k++) {
            uint64_t t = (uint64_t)r[k] * 10 + carry;
            r[k] = (uint32_t)(t % LIMB_BASE);
            carry = t / LIMB_BASE;
        }
        while (limbs_cmp(r, ml, n + 1) >= 0) {
            int64_t borrow = 0;
            for (size_t k = 0; k <= n; k++) {
                int64_t t = (int64_t)r[k] - (int64_t)ml[k] - borrow;
                borrow = t < 0;
                r[k] = (uint32_t)(t < 0 ? t + LIMB_BASE : t);
            }
        }
    }
    int zero = 1;
    for (size_t k = 0; k <= n; k++)
        zero &= r[k] == 0;
    free(ml);
    free(r);
    return zero;
}

int bignum_divisible(const json_t *x, const json_t *m) {
    if (json_is_integer(x) && json_is_integer(m)) {
        json_int_t mv = json_integer_value(m);
        return mv > 0 && json_integer_value(x) % mv == 0;
    }
    dec a, b;
    dec_of(&a, x);
    dec_of(&b, m);
    if (b.neg || dec_is_zero(&b))
        return 0;
    return mag_divisible(a.d, a.n, b.d, b.n);
}

/* ---- sums ---- */

/* out (room for max(an, bn) + 1 digits) = a + b; returns the digit count. */
static size_t mag_add(char *out, const char *a, size_t an, const char *b, size_t bn) {
    size_t n = (an > bn ? an : bn) + 1;
    int carry = 0;
    for (size_t i = 0; i < n; i++) {
        int s = carry + (i < an ? a[an - 1 - i] - '0' : 0) + (i < bn ? b[bn - 1 - i] - '0' : 0);
        out[n - 1 - i] = (char)('0' + s % 10);
        carry = s / 10;
    }
    return n;
}

/* out (room for an digits) = a - b, a >= b; returns the digit count. */
static size_t mag_sub(char *out, const char *a, size_t an, const char *b, size_t bn) {
    int borrow = 0;
    for (size_t i = 0; i < an; i++) {
        int s = (a[an - 1 - i] - '0') - borrow - (i < bn ? b[bn - 1 - i] - '0' : 0);
        borrow = s < 0;
        out[an - 1 - i] = (char)('0' + (s < 0 ? s + 10 : s));
    }
    return an;
}

json_t *bignum_add(const json_t *a, const json_t *b) {
    if (!bignum_is_integer(a) || !bignum_is_integer(b))
        return NULL;
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t s;
        if (!__builtin_add_overflow(json_integer_value(a), json_integer_value(b), &s))
            return json_integer(s);
    }
    dec x, y;
    dec_of(&x, a);
    dec_of(&y, b);
    size_t cap = (x.n > y.n ? x.n : y.n) + 2;
    char *text = malloc(cap + 1);
    if (!text)
        return NULL;
    char *digits = text + 1;
    size_t n;
    int neg;
    if (x.neg == y.neg) {
        n = mag_add(digits, x.d, x.n, y.d, y.n);
        neg = x.neg;
    } else if (mag_cmp(x.d, x.n, y.d, y.n) >= 0) {
        n = mag_sub(digits, x.d, x.n, y.d, y.n);
        neg = x.neg;
    } else {
        n = mag_sub(digits, y.d, y.n, x.d, x.n);
        neg = y.neg;
    }
    size_t lead = 0;
    while (lead + 1 < n && digits[lead] == '0')
        lead++;
    digits += lead;
    n -= lead;
    if (n == 1 && digits[0] == '0')
        neg = 0;
    if (neg)
        *--digits = '-', n++;
    json_t *v = bignum_from_text(digits, n);
    free(text);
    return v;
}
