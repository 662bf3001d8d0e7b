/* builtin_text.c - the built-in training text: short stories, everyday
 * facts and sums written from a fixed grammar by a fixed-seed generator, so
 * every build trains on the same ~200 KB of English-like text without a
 * download. Regular enough that a tiny byte-level model learns spelling,
 * sentence shapes and names within minutes; varied enough to keep learning. */
#include "trainer/data.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUILTIN_BYTES (200 * 1024)
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *names[] = {"Anna", "Ben", "Clara", "David", "Ella", "Finn", "Grace", "Hugo",
                              "Ivy", "Jack", "Lily", "Max", "Nora", "Oscar", "Rosa", "Sam"};
static const char *animals[] = {"cat", "dog", "fox", "owl", "rabbit", "horse", "duck", "bear", "mouse", "frog"};
static const char *places[] = {"garden", "forest", "kitchen", "park", "river", "village", "library", "field",
                               "market", "hill"};
static const char *things[] = {"ball", "book", "kite", "hat", "apple", "box", "cake", "lamp", "boat", "key"};
static const char *colors[] = {"red", "blue", "green", "yellow", "brown", "white", "small", "big", "old", "new"};
static const char *likes[] = {"read", "sing", "run", "paint", "swim", "dance", "cook", "play", "climb", "sleep"};
static const char *feelings[] = {"happy", "sad", "tired", "hungry", "brave", "calm", "proud", "sleepy"};
static const char *days[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
static const char *numbers[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                "ten"};

typedef struct {
    char *buf;
    size_t n, cap;
    uint64_t rng;
} gen;

static uint32_t rnd(gen *g, uint32_t n) {
    /* xorshift64*: fixed seed, identical output on every machine */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return (uint32_t)(((g->rng * 0x2545F4914F6CDD1Dull) >> 32) % n);
}

static void put(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(gen *g, const char *fmt, ...) {
    if (!g->buf) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(g->buf + g->n, g->cap - g->n, fmt, ap);
    va_end(ap);
    if (k > 0 && (size_t)k < g->cap - g->n) g->n += (size_t)k;
    else g->n = g->cap; /* full: the caller stops */
}

#define PICK(a) a[rnd(g, (uint32_t)N(a))]

/* "a" or "an" before w (by its first letter; enough for these word lists) */
static const char *art(const char *w, int cap) {
    int vowel = strchr("aeiouAEIOU", w[0]) != NULL;
    return cap ? (vowel ? "An" : "A") : (vowel ? "an" : "a");
}

static void story(gen *g) {
    const char *who = PICK(names), *pet = PICK(animals), *place = PICK(places), *thing = PICK(things);
    const char *color = PICK(colors), *like = PICK(likes), *friend = PICK(names);
    while (friend == who) friend = PICK(names);
    put(g, "Once upon a time, there was %s %s named %s. ", art(pet, 0), pet, who);
    put(g, "%s lived near the %s and liked to %s. ", who, place, like);
    put(g, "One %s, %s found %s %s %s in the %s. ", PICK(days), who, art(color, 0), color, thing, place);
    switch (rnd(g, 3)) {
    case 0:
        put(g, "%s said, \"Look, %s! %s %s %s!\" ", who, friend, art(color, 1), color, thing);
        put(g, "%s was %s, and they played with the %s all day. ", friend, PICK(feelings), thing);
        break;
    case 1:
        put(g, "The %s was too heavy, so %s asked %s for help. ", thing, who, friend);
        put(g, "Together they carried it home, and %s felt %s. ", who, PICK(feelings));
        break;
    default:
        put(g, "But the %s was not %s's. It belonged to %s. ", thing, who, friend);
        put(g, "%s gave it back, and %s said, \"Thank you!\" ", who, friend);
    }
    put(g, "At night, %s went to sleep and dreamed of the %s.\n\n", who, place);
}

static void facts(gen *g) {
    for (int i = 0; i < 4; i++) {
        uint32_t a = rnd(g, 6), b = rnd(g, 5);
        switch (rnd(g, 4)) {
        case 0: put(g, "%s plus %s is %s. ", numbers[a], numbers[b], numbers[a + b]); break;
        case 1: put(g, "%u + %u = %u. ", a * 7 + b, b * 3 + a, a * 7 + b + b * 3 + a); break;
        case 2: {
            const char *an = PICK(animals), *th = PICK(things);
            put(g, "%s %s is an animal. %s %s is not an animal. ", art(an, 1), an, art(th, 1), th);
            break;
        }
        default: put(g, "After %s comes %s. ", days[a], days[a + 1]);
        }
    }
    put(g, "\n\n");
}

static void dialogue(gen *g) {
    const char *a = PICK(names), *b = PICK(names), *thing = PICK(things);
    while (b == a) b = PICK(names);
    uint32_t k = 2 + rnd(g, 8);
    put(g, "%s: How many %ss do you have?\n", a, thing);
    put(g, "%s: I have %s %ss.\n", b, numbers[k], thing);
    put(g, "%s: Can I have one?\n", a);
    put(g, "%s: Yes. Now I have %s %ss.\n\n", b, numbers[k - 1], thing);
}

char *ap_builtin_text(size_t *n) {
    gen g = {malloc(BUILTIN_BYTES + 1), 0, BUILTIN_BYTES + 1, 0x6175746F70697065ull /* "autopipe" */};
    if (!g.buf) return NULL;
    while (g.n < BUILTIN_BYTES) {
        size_t before = g.n;
        uint32_t r = rnd(&g, 10);
        if (r < 6) story(&g);
        else if (r < 8) facts(&g);
        else dialogue(&g);
        if (g.n >= g.cap) {
            g.n = before; /* drop the cut-off piece */
            break;
        }
    }
    g.buf[g.n] = '\0';
    *n = g.n;
    return g.buf;
}
