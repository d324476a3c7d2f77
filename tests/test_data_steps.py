"""The per-document steps with planted cases: near-duplicates as the web makes them, PII, languages,
and the quality rules' published thresholds."""

import random
import re
from collections import Counter

import numpy as np
import pytest

from chatforge.data import dedup, filters
from chatforge.data.pii import iban_ok, luhn_ok, scrub
from chatforge.data.readers import Document

PROSE = ("The committee met on Tuesday to discuss the proposal, and after a long debate the members agreed "
         "that the plan should go ahead with some changes. ")


def doc(text: str, url: str | None = None) -> Document:
    return Document(text=text, id="t", url=url)


# ---------------------------------------------------------------- near-duplicates

def _bbc_articles(n: int) -> list[str]:
    """Real news articles of five topics from the sample corpus package, so 'distinct documents on the
    same topic' is real; the corpus's own near-duplicate pairs are removed by exact Jaccard first."""
    from chatforge.data.samples import bbc_news

    texts = [filters.normalise(d.text) for d in bbc_news({})]
    random.Random(0).shuffle(texts)
    chosen: list[str] = []
    chosen_sets: list[set] = []
    for t in texts:
        ws = re.findall(r"\w+", t.lower())
        s = {tuple(ws[i:i + 5]) for i in range(len(ws) - 4)}
        if len(ws) > 150 and all(len(s & c) / len(s | c) < 0.3 for c in chosen_sets):
            chosen.append(t)
            chosen_sets.append(s)
        if len(chosen) == n:
            break
    return chosen


NAV = ["Home | News | Sport | Weather | iPlayer | Sounds", "Skip to content", "Menu  Search  Sign in",
       "Top stories | Most read | Latest", "Share this page: Facebook Twitter Email"]
FOOT = ["(c) 2024 The Daily Planet. All rights reserved.", "Privacy policy | Cookies | Contact us | About",
        "Related articles: More from this section", "Subscribe to our newsletter for updates"]
KINDS = ["nav", "sentences", "edits"]
FILLER = ["Officials said further details would be published later this week.",
          "The company declined to comment on the report.", "Shares closed slightly higher on the day."]


def web_variant(text: str, rng: random.Random, kind: str) -> str:
    """The same article as the web copies it: `nav` (under another site's navigation, header and footer),
    `sentences` (a sentence or two added or removed), `edits` (up to 2% of the words replaced), or `all`
    three on one copy. Paragraphs stay paragraphs."""
    if kind == "all":
        for k in ("sentences", "edits", "nav"):
            text = web_variant(text, rng, k)
        return text
    paras = [re.split(r"(?<=[.!?]) ", p) for p in text.split("\n")]
    if kind == "nav":
        return "\n".join(rng.sample(NAV, 2) + [text] + rng.sample(FOOT, 2))
    if kind == "sentences":
        for _ in range(rng.randint(1, 2)):
            p = paras[rng.randrange(1, len(paras))]
            if rng.random() < 0.5 and len(p) > 1:
                p.pop(rng.randrange(len(p)))
            else:
                p.insert(rng.randrange(len(p) + 1), rng.choice(FILLER))
    lines = [" ".join(p).split(" ") for p in paras]
    if kind == "edits":
        slots = [(i, j) for i, ws in enumerate(lines) for j in range(len(ws))]
        for i, j in rng.sample(slots, int(len(slots) * rng.uniform(0, 0.02))):
            lines[i][j] = rng.choice(["lorem", "foo", "changed", "edited", "quux", "widget"])
    return "\n".join(" ".join(ws) for ws in lines)


def _clusters(texts: list[str]) -> tuple[np.ndarray, list]:
    sigs = np.stack([dedup.minhash(t) for t in texts])
    return dedup.clusters(sigs, [dedup.content_hash(t) for t in texts], [dedup.sentence_hashes(t) for t in texts])


def test_near_duplicates_found_and_distinct_same_topic_docs_never_merged():
    rng = random.Random(1)
    originals = _bbc_articles(150)
    texts, source, kinds = [], [], []
    for i, t in enumerate(originals):
        texts.append(t)
        source.append(i)
        kinds.append("original")
        # 100 articles with two web copies (all three changes on one, one change on the other), 50 with none
        for kind in ["all", KINDS[i % 3]] if i < 100 else []:
            texts.append(web_variant(t, rng, kind))
            source.append(i)
            kinds.append(kind)
    order = rng.sample(range(len(texts)), len(texts))
    texts, source, kinds = [texts[i] for i in order], [source[i] for i in order], [kinds[i] for i in order]
    cluster, reasons = _clusters(texts)
    original_cluster = {source[i]: cluster[i] for i in range(len(texts)) if kinds[i] == "original"}
    for kind in [*KINDS, "all"]:
        copies = [i for i in range(len(texts)) if kinds[i] == kind]
        recall = sum(cluster[i] == original_cluster[source[i]] for i in copies) / len(copies)
        assert recall >= 0.95, f"near-duplicate recall {recall:.3f} for {kind} copies"
    merged = wrong = 0
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if cluster[i] == cluster[j]:
                merged += 1
                wrong += source[i] != source[j]
    precision = 1 - wrong / max(1, merged)
    assert precision >= 0.99, f"near-duplicate precision {precision:.3f} ({wrong} distinct pairs merged)"
    kept = [i for i, r in enumerate(reasons) if r is None]
    assert len({source[i] for i in kept}) == len(originals)  # every article survives once...
    assert len(kept) <= len(originals) * 1.05  # ...and its copies mostly go


def test_sentence_pairs_are_verified_by_the_signatures():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32 - 1, dedup.N_HASHES, dtype=np.uint32)
    copy = sig.copy()
    copy[:: dedup.ROWS] += 1  # one minhash off in every band: no band matches, 7/8 of the minhashes agree
    other = sig.copy()
    other[np.arange(dedup.N_HASHES) % dedup.ROWS < 6] += 1  # 25% agree: below VERIFY_JACCARD
    copy2 = sig.copy()
    copy2[1:: dedup.ROWS] += 1
    sigs = np.stack([sig, copy, other, copy2])
    shared = np.array([7, 42], dtype=np.uint64)
    hashes = [b"a", b"b", b"c", b"d"]
    assert dedup.clusters(sigs, hashes)[0].tolist() == [0, 1, 2, 3]  # the bands alone find nothing
    cluster, reasons = dedup.clusters(sigs, hashes, [shared, shared[:1], shared, np.array([9], dtype=np.uint64)])
    # doc 1 shares a sentence with doc 0 and agrees: merged; doc 2 shares both sentences but disagrees;
    # doc 3 agrees with docs 0 and 1 but shares no sentence with them
    assert cluster.tolist() == [0, 0, 2, 3] and reasons == [None, "near_duplicate", None, None]
    ws = " ".join(f"w{i}" for i in range(12))
    assert dedup.sentence_hashes(f"Too short to count. {ws}. {ws.upper()}!").size == 1  # case does not count
    assert np.array_equal(dedup.sentence_hashes(f"{ws}.\nOther."), dedup.sentence_hashes(f"Intro. {ws}"))


def test_exact_duplicates_and_documents_without_words():
    texts = [PROSE * 3, PROSE * 3, "", "!!! ???", PROSE * 4]
    cluster, reasons = _clusters(texts)
    assert reasons[:2] == [None, "exact_duplicate"]
    assert reasons[2] is None and reasons[3] is None  # empty signatures never match each other
    assert cluster[4] == 0 and reasons[4] == "near_duplicate"  # PROSE x3 vs x4: the same shingle set


def test_minhash_is_deterministic_and_estimates_jaccard():
    a = " ".join(f"w{i}" for i in range(400))
    b = " ".join(f"w{i}" for i in range(100, 500))  # 296 of 496 shingles shared: J = 0.597
    sa, sb = dedup.minhash(a), dedup.minhash(b)
    assert np.array_equal(sa, dedup.minhash(a))
    assert abs((sa == sb).mean() - 296 / 496) < 0.12


# ---------------------------------------------------------------- PII

def _luhn_card(rng: random.Random, prefix: str) -> str:
    digits = prefix + "".join(str(rng.randint(0, 9)) for _ in range(15 - len(prefix)))
    for check in range(10):
        if luhn_ok(digits + str(check)):
            return digits + str(check)
    raise AssertionError


def test_planted_pii_is_replaced_and_ordinary_numbers_are_not():
    rng = random.Random(0)
    planted, clean = [], []
    for i in range(40):
        card = _luhn_card(rng, rng.choice(["4", "51", "37"]))
        planted += [f"user{i}.name@mail{i}.example.org", f"{rng.randint(11, 99)}.{rng.randint(1, 254)}.{i + 1}.7",
                    f"2001:db{i % 10}::{i + 1:x}".replace("2001:db", "2a00:14"),
                    f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}",
                    f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                    " ".join(card[k:k + 4] for k in range(0, 16, 4)), "DE89 3704 0044 0532 0130 00"]
        clean += [f"in {rng.randint(1900, 2030)}", f"${rng.randint(1, 9999)}.{rng.randint(10, 99)}",
                  f"{rng.randint(1, 999)},{rng.randint(100, 999)},{rng.randint(100, 999)} people",
                  f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                  f"from {rng.randint(1900, 2000)}-{rng.randint(2001, 2030)}", f"{rng.randint(1, 31)}/12/2023",
                  f"page {rng.randint(1, 500)}", f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-"
                  f"{rng.randint(10000, 99999)}-{rng.randint(0, 9)}", f"at {rng.randint(0, 23)}:{rng.randint(10, 59)}",
                  "private 192.168.1.20 and loopback ::1", f"{rng.randint(1000000, 99999999)} views"]
    text = "\n".join(f"Contact: {p}." for p in planted)
    out = scrub(text)
    survived = [p for p in planted if p in out]
    assert 1 - len(survived) / len(planted) >= 0.95, survived
    assert "Contact: <" in out
    normal = "\n".join(f"It cost {c} then." for c in clean)
    assert scrub(normal) == normal


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert scrub("card 4111 1111 1111 1112 here") == "card 4111 1111 1111 1112 here"


# ---------------------------------------------------------------- language ID

MULTILINGUAL = {
    "en": ["The weather was cold this morning, so we stayed inside and read books by the fire.",
           "Our team released a new version of the software with several important fixes.",
           "She walked to the market to buy fresh bread, cheese and a few apples."],
    "de": ["Das Wetter war heute Morgen kalt, also blieben wir drinnen und lasen Bücher am Kamin.",
           "Unser Team hat eine neue Version der Software mit mehreren wichtigen Korrekturen veröffentlicht.",
           "Sie ging zum Markt, um frisches Brot, Käse und ein paar Äpfel zu kaufen."],
    "fr": ["Il faisait froid ce matin, alors nous sommes restés à l'intérieur pour lire près du feu.",
           "Notre équipe a publié une nouvelle version du logiciel avec plusieurs corrections importantes.",
           "Elle est allée au marché pour acheter du pain frais, du fromage et quelques pommes."],
    "es": ["Hacía frío esta mañana, así que nos quedamos dentro leyendo libros junto al fuego.",
           "Nuestro equipo publicó una nueva versión del programa con varias correcciones importantes.",
           "Ella caminó al mercado para comprar pan fresco, queso y algunas manzanas."],
    "it": ["Stamattina faceva freddo, così siamo rimasti in casa a leggere libri vicino al fuoco.",
           "Il nostro gruppo ha pubblicato una nuova versione del programma con diverse correzioni importanti.",
           "È andata al mercato per comprare pane fresco, formaggio e qualche mela."],
    "pt": ["Estava frio esta manhã, então ficamos em casa lendo livros perto da lareira.",
           "A nossa equipa lançou uma nova versão do programa com várias correções importantes.",
           "Ela foi ao mercado comprar pão fresco, queijo e algumas maçãs."],
    "nl": ["Het was koud vanochtend, dus we bleven binnen en lazen boeken bij de open haard.",
           "Ons team heeft een nieuwe versie van de software met een aantal belangrijke verbeteringen uitgebracht.",
           "Ze liep naar de markt om vers brood, kaas en een paar appels te kopen."],
    "ru": ["Утром было холодно, поэтому мы остались дома и читали книги у камина.",
           "Наша команда выпустила новую версию программы с несколькими важными исправлениями.",
           "Она пошла на рынок, чтобы купить свежий хлеб, сыр и несколько яблок."],
    "pl": ["Rano było zimno, więc zostaliśmy w domu i czytaliśmy książki przy kominku.",
           "Nasz zespół wydał nową wersję programu z kilkoma ważnymi poprawkami.",
           "Poszła na targ kupić świeży chleb, ser i kilka jabłek."],
    "ja": ["今朝は寒かったので、私たちは家の中で暖炉のそばで本を読みました。",
           "私たちのチームは、いくつかの重要な修正を含むソフトウェアの新しいバージョンをリリースしました。",
           "彼女は新鮮なパンとチーズとりんごを買いに市場へ歩いて行きました。"],
    "zh": ["今天早上很冷，所以我们待在家里，在火炉旁看书。", "我们的团队发布了新版本的软件，其中包含几个重要的修复。",
           "她走到市场去买新鲜的面包、奶酪和几个苹果。"],
    "ar": ["كان الجو باردا هذا الصباح، لذلك بقينا في المنزل نقرأ الكتب بجانب المدفأة.",
           "أصدر فريقنا نسخة جديدة من البرنامج مع عدة إصلاحات مهمة.",
           "ذهبت إلى السوق لشراء الخبز الطازج والجبن وبعض التفاح."],
    "tr": ["Bu sabah hava soğuktu, bu yüzden evde kalıp şöminenin yanında kitap okuduk.",
           "Ekibimiz birkaç önemli düzeltme içeren yazılımın yeni bir sürümünü yayınladı.",
           "Taze ekmek, peynir ve birkaç elma almak için pazara yürüdü."],
    "sv": ["Det var kallt i morse, så vi stannade inne och läste böcker vid brasan.",
           "Vårt team har släppt en ny version av programmet med flera viktiga rättelser.",
           "Hon gick till torget för att köpa färskt bröd, ost och några äpplen."],
}


@pytest.fixture(scope="module")
def lid() -> filters.LanguageID:
    return filters.LanguageID(["en"], 0.65)


def test_language_id_on_a_multilingual_fixture(lid):
    results = [(lang, lid.predict(t)[0]) for lang, texts in MULTILINGUAL.items() for t in texts]
    accuracy = sum(a == b for a, b in results) / len(results)
    assert accuracy >= 0.95, [r for r in results if r[0] != r[1]]


def test_language_step_keeps_target_and_records_language(lid):
    en, de = doc(MULTILINGUAL["en"][0]), doc(MULTILINGUAL["de"][0])
    assert lid(en) is None and en.language == "en" and 0.65 < en.language_score <= 1
    assert lid(de) == "language_de" and de.language == "de"


# ---------------------------------------------------------------- URL and quality rules

def test_url_filter_reads_user_lists(tmp_path):
    (tmp_path / "domains").write_text("# comment\nbad.example\n")
    (tmp_path / "subs").write_text("/casino-\n")
    (tmp_path / "words").write_text("xxx\n")
    (tmp_path / "soft").write_text("hot\ndeals\n")
    f = filters.UrlFilter(*(str(tmp_path / n) for n in ("domains", "subs", "words", "soft")))
    assert f(doc("", "https://www.bad.example/page")) == "url_blocked_domain"
    assert f(doc("", "https://notbad.example/page")) is None
    assert f(doc("", "https://site.org/casino-royale")) == "url_blocked_substring"
    assert f(doc("", "https://site.org/xxx/1")) == "url_banned_word"
    assert f(doc("", "https://site.org/boxxxes")) is None  # a banned word inside another word
    assert f(doc("", "https://site.org/hot-deals")) == "url_soft_banned_words"
    assert f(doc("", "https://site.org/hot-weather")) is None
    assert f(doc("no url")) is None


def test_words_cut_like_spacy():
    text = '"Don\'t," she said (see os.path.join()). It\'s 32-bit... SortKey.NAME costs $5.'
    assert filters.words(text) == ('"', "Do", "n't", ",", '"', "she", "said", "(", "see", "os.path.join", "(", ")",
                                   ")", ".", "It", "'s", "32", "-", "bit", "...", "SortKey", ".", "NAME", "costs",
                                   "$", "5", ".")


def test_gopher_quality_thresholds():
    assert filters.gopher_quality(doc(PROSE * 3)) is None
    assert filters.gopher_quality(doc("Too short a text, with the and of.")) == "gopher_short_doc"
    assert filters.gopher_quality(doc("the of " + "a b c d e f " * 20)) == "gopher_below_avg_word_length"
    assert filters.gopher_quality(doc(PROSE * 3 + "#" * 40)) == "gopher_too_many_hashes"
    assert filters.gopher_quality(doc("\n".join(f"- item {i} in the list of things" for i in range(60)))) \
        == "gopher_too_many_bullets"
    nums = " ".join(str(1000 + i) for i in range(60))
    assert filters.gopher_quality(doc(f"the of and {nums} with data")) == "gopher_below_alpha_threshold"
    assert filters.gopher_quality(doc("Lorem ipsum dolor sit amet " * 12)) == "gopher_enough_stop_words"


def test_gopher_word_count_is_at_the_named_threshold_and_skips_punctuation():
    words = ("the cat and the dog sat with that old man " * 10).split()
    enough = words[: filters.GOPHER_MIN_WORDS]
    assert filters.gopher_quality(doc(" ".join(enough) + " , ; - (")) is None
    assert filters.gopher_quality(doc(" ".join(enough[:-1]) + " , ; - (")) == "gopher_short_doc"


def test_gopher_repetition_thresholds():
    assert filters.gopher_repetition(doc(" ".join(f"word{i}" for i in range(300)))) is None
    assert filters.gopher_repetition(doc("same line here\n" * 10 + PROSE)) == "gopher_dup_line_frac"
    assert filters.gopher_repetition(doc("buy now " * 100 + PROSE)) == "gopher_top_2_gram"
    unique = " ".join(f"w{i}" for i in range(100))
    block = " ".join(f"r{i}" for i in range(100))
    assert filters.gopher_repetition(doc(f"{unique} {block} {block}")) == "gopher_duplicated_5_grams"


def test_ngram_repeats_match_counting_and_the_sequential_scan():
    rng = random.Random(0)
    for _ in range(60):
        ws = [rng.choice("abcdef"[: rng.randint(1, 6)]) for _ in range(rng.randint(1, 80))]
        ids = np.array([ord(w) for w in ws])
        got = list(filters.ngram_repeats(ids, 10))
        assert [g[0] for g in got] == list(range(2, min(10, len(ws)) + 1))
        for n, first_top, top, repeats in got:
            grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
            gram, count = Counter(grams).most_common(1)[0]  # ties: the first seen, as Gopher's Counter
            assert (top, first_top) == (count, grams.index(gram))
            assert repeats.tolist() == [i for i, g in enumerate(grams) if g in grams[:i]]
            seen, chars, i = set(), 0, 0
            while i <= len(ws) - n:  # Gopher's scan, position by position
                g = tuple(ws[i:i + n])
                if g in seen:
                    chars, i = chars + n, i + n
                else:
                    seen.add(g)
                    i += 1
            got_chars = filters.repeated_ngram_chars(repeats, np.full(len(grams), n), n)
            assert chars <= got_chars <= chars + 2 * n * (chars // n) + 1  # never fewer; rarely a few more


def test_c4_rules_edit_lines_and_drop_documents():
    d = doc("Home\nPlease enable JavaScript to view this site properly.\n" + PROSE * 6
            + "\nRead our privacy policy before you continue here.")
    assert filters.c4_quality(d) is None
    assert "JavaScript" not in d.text and "privacy" not in d.text and "Home" not in d.text
    assert filters.c4_quality(doc(PROSE * 6 + "\nlorem ipsum dolor sit amet")) == "c4_lorem_ipsum"
    assert filters.c4_quality(doc(PROSE * 6 + "\nfunction f() { return 1; }")) == "c4_curly_bracket"
    assert filters.c4_quality(doc(PROSE * 2)) == "c4_too_few_sentences"


def test_fineweb_rules():
    assert filters.fineweb_quality(doc("\n".join([PROSE] * 1 + ["x " * 30 + f"line {i} ends well."
                                                             for i in range(5)]))) is None
    assert filters.fineweb_quality(doc("\n".join(f"menu item {i} of the list here" for i in range(20)))) \
        == "fineweb_line_punct_ratio"
    assert filters.fineweb_quality(doc("\n".join(["Short one."] * 1 + [f"Tiny {i}." for i in range(9)] + [PROSE]))) \
        == "fineweb_short_line_ratio"
    assert filters.fineweb_quality(doc((PROSE.strip() + "\n") * 3)) == "fineweb_char_dup_ratio"


def test_gutenberg_boilerplate_is_stripped():
    body = "It was the best of times, it was the worst of times.\n" * 10
    text = ("The Project Gutenberg EBook of Nothing\nLicense blah\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\n" + body +
            "*** END OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\nMore license text\n")
    assert filters.strip_gutenberg(text).strip() == body.strip()
    assert filters.strip_gutenberg(body) == body  # no markers: untouched


def test_normalise_whitespace_and_unicode():
    assert filters.normalise("  a\r\nb  \r\n\n\n\n\ncafe\u0301 \n") == "a\nb\n\ncafé"
