"""Calibration/evaluation domains of multi-objective runs (MOSP and its "Extension 1" baselines).

A domain is a pair of text sources — calibration rows and test rows — each from the hub through `datasets`, from a
local file, or (offline) from a small bundled stand-in:

| domain | hub dataset (calibration / test) | row text |
|---|---|---|
| `c4` | allenai/c4 `en/c4-train.00000-of-01024` / `en/c4-validation.00000-of-00008` | `text` (the project's C4 protocol) |
| `gsm8k` | `openai/gsm8k` main, `train` / `test` | `question + "\\n" + answer` |
| `code` | `iamtarun/python_code_instructions_18k_alpaca` `train[:90%]` / `train[90%:]` | `prompt` (the full Alpaca-format row) |
| `code_alpaca` | `sahil2801/CodeAlpaca-20k` `train[:90%]` / `train[90%:]` | `instruction \\n input \\n output` |
| `wikitext2`, `local_text` | the project's WikiText-2 protocols | |

Calibration windows: C4 uses the project's C4 sampler (random documents longer than seqlen, one random window each,
`repro.data.calibration`); GSM8K and the code sets have short rows (a few hundred tokens), so their rows are
joined with "\\n\\n" and random windows of the token stream are drawn (the WikiText sampler) — MOSP says only "128
segments (up to 2048 tokens)" per domain. Test: rows joined with "\\n\\n", tokenised once, non-overlapping windows
(the WikiText perplexity protocol; C4 keeps its own: first 1100 documents, 256 windows). The code datasets have no
test split on the hub: the last 10% of `train` (in the hub's row order) is held out for the test, the first 90%
calibrates. Why `code` is the default code domain: experiments/mosp/NOTES.md.

Offline stand-ins (`objectives.standins=true`, set by env=offline): `c4` → the bundled WikiText-2 slices
(tail: calibration, head: test); `gsm8k` and `code` → `repro/assets/{gsm8k,code}-standin-{train,test}.jsonl`,
**synthetic** rows written by `python -m repro.data.domains` (templated grade-school word problems in GSM8K's
answer format, templated Python instruction/solution pairs in the Alpaca prompt format). They are NOT the papers'
data; they exist so the multi-objective code path runs offline and in the tests. Every record says which source
each domain used.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Optional

from repro.config import CalibConfig, ConfigError, DataSourceConfig
from repro.data.sources import ASSETS


@dataclass(frozen=True)
class Domain:
    calib: str                     # calibration source (repro.data.calibration.CALIBRATION_SOURCES)
    ppl: str                       # perplexity protocol (repro.data.perplexity PROTOCOLS / DOMAIN_PROTOCOLS)
    standin_calib: Optional[str]   # bundled offline files (repro/assets)
    standin_test: Optional[str]


DOMAINS = {
    "c4": Domain("c4", "c4", "wikitext2-test-tail.txt", "wikitext2-test-head.txt"),
    "gsm8k": Domain("gsm8k", "gsm8k", "gsm8k-standin-train.jsonl", "gsm8k-standin-test.jsonl"),
    "code": Domain("code", "code", "code-standin-train.jsonl", "code-standin-test.jsonl"),
    "code_alpaca": Domain("code_alpaca", "code_alpaca", None, None),
    "wikitext2": Domain("wikitext2", "wikitext2", "wikitext2-test-tail.txt", "wikitext2-test-head.txt"),
    "local_text": Domain("local_text", "local_text", "wikitext2-test-tail.txt", "wikitext2-test-head.txt"),
}


def check_domain(where: str, dom) -> None:
    """A known domain with test data: a test source must exist (hub protocol, local file or stand-in)."""
    from repro.input_checks import check_text_file

    if dom.name not in DOMAINS:
        raise ConfigError(f"{where}.name", dom.name, "one of " + ", ".join(DOMAINS),
                          "Each objective is a domain with calibration and test data.")
    for field, path in (("calib_local_path", dom.calib_local_path), ("test_local_path", dom.test_local_path)):
        check_text_file(f"{where}.{field}", path)


def check_test_data(where: str, dom, standins: bool, test_tokens: Optional[int] = None,
                    calib_tokens: Optional[int] = None) -> None:
    """Raise when a domain would have no test data in this run (offline without a stand-in or a local file), or
    when its local test (calibration) text cannot hold one window of `test_tokens` (`calib_tokens`) tokens."""
    from repro.input_checks import check_text_file

    d = DOMAINS[dom.name]
    if standins and not dom.test_local_path and d.standin_test is None:
        raise ConfigError(f"{where}.test_local_path", None, "a local test file for this domain",
                          f"Domain {dom.name!r} has no offline stand-in (objectives.standins=true): it has no "
                          f"test data here.")
    if standins and not dom.calib_local_path and d.standin_calib is None:
        raise ConfigError(f"{where}.calib_local_path", None, "a local calibration file for this domain",
                          f"Domain {dom.name!r} has no offline stand-in (objectives.standins=true).")
    check_text_file(f"{where}.test_local_path", _local(dom.test_local_path, d.standin_test, standins), test_tokens)
    check_text_file(f"{where}.calib_local_path", _local(dom.calib_local_path, d.standin_calib, standins),
                    calib_tokens)


def _local(path: Optional[str], standin: Optional[str], standins: bool) -> Optional[str]:
    if path:
        return path
    return str(ASSETS / standin) if standins and standin else None


def calib_config(dom, calib: CalibConfig, standins: bool) -> CalibConfig:
    """The calibration config of one domain: the run's nsamples/seqlen/seed/batch, the domain's source."""
    d = DOMAINS[dom.name]
    local = _local(dom.calib_local_path, d.standin_calib, standins)
    name = d.calib
    if local and name == "c4" and local.endswith(".txt"):
        name = "local_text"                          # the C4 stand-in is plain text: the stream sampler
    return dataclasses.replace(calib, name=name, local_path=local, hub_path=dom.hub_path)


def test_source(dom, standins: bool):
    """(perplexity protocol name, DataSourceConfig) of one domain's test stream."""
    d = DOMAINS[dom.name]
    local = _local(dom.test_local_path, d.standin_test, standins)
    ppl = "local_text" if (local and d.ppl == "c4" and local.endswith(".txt")) else d.ppl
    return ppl, DataSourceConfig(local_path=local, hub_path=dom.hub_path, revision=dom.revision)


# ---------------------------------------------------------------- offline stand-ins (synthetic)

_NAMES = ["Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Liam",
          "Maya", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
_ITEMS = [("apples", 2), ("pencils", 1), ("notebooks", 3), ("stickers", 1), ("cupcakes", 4), ("marbles", 1),
          ("books", 6), ("tickets", 5), ("plants", 7), ("shirts", 9)]


def _word_problem(rng: random.Random) -> dict:
    """A templated two- or three-step word problem with GSM8K's answer format (<<calc=result>>, #### n)."""
    name, other = rng.sample(_NAMES, 2)
    item, price = rng.choice(_ITEMS)
    a, b, c = rng.randint(3, 40), rng.randint(2, 12), rng.randint(2, 9)
    kind = rng.randrange(4)
    if kind == 0:
        q = (f"{name} has {a} {item}. {other} gives {name} {b} more, and then {name} buys {c} times as many as "
             f"{other} gave. How many {item} does {name} have now?")
        t1, t2 = a + b, b * c
        ans = (f"After {other}'s gift {name} has {a}+{b}=<<{a}+{b}={t1}>>{t1} {item}.\n"
               f"{name} buys {b}*{c}=<<{b}*{c}={t2}>>{t2} more.\nSo {name} has {t1}+{t2}=<<{t1}+{t2}={t1 + t2}>>"
               f"{t1 + t2} {item}.\n#### {t1 + t2}")
    elif kind == 1:
        q = (f"Each of the {item} costs ${price}. {name} buys {a} of them and pays with ${a * price + b}. "
             f"How much change does {name} get?")
        t1 = a * price
        ans = (f"The {item} cost {a}*{price}=<<{a}*{price}={t1}>>{t1} dollars.\n"
               f"The change is {t1 + b}-{t1}=<<{t1 + b}-{t1}={b}>>{b} dollars.\n#### {b}")
    elif kind == 2:
        total = a * c
        q = (f"{name} packs {total} {item} into boxes of {c}. {other} takes {min(b, a)} boxes. "
             f"How many boxes are left?")
        t1, t2 = total // c, a - min(b, a)
        ans = (f"There are {total}/{c}=<<{total}/{c}={t1}>>{t1} boxes.\n"
               f"After {other} takes {min(b, a)}, {t1}-{min(b, a)}=<<{t1}-{min(b, a)}={t2}>>{t2} boxes are left."
               f"\n#### {t2}")
    else:
        q = (f"{name} reads {a} pages on Monday and {b} pages fewer on Tuesday than on Monday"
             f"{'' if a > b else ' (but at least 1 page)'}. On Wednesday {name} reads twice as many pages as on "
             f"Tuesday. How many pages did {name} read in the three days?")
        t1 = max(a - b, 1)
        t2 = 2 * t1
        ans = (f"On Tuesday {name} reads {a}-{b}=<<{a}-{b}={a - b}>>{a - b} pages"
               f"{'' if a > b else f', so {t1} page'}.\nOn Wednesday {name} reads 2*{t1}=<<2*{t1}={t2}>>{t2} "
               f"pages.\nIn all {a}+{t1}+{t2}=<<{a}+{t1}+{t2}={a + t1 + t2}>>{a + t1 + t2} pages.\n"
               f"#### {a + t1 + t2}")
    return {"question": q, "answer": ans}


_CODE_TASKS = [
    ("Write a Python function to compute the {stat} of a list of numbers.", "{fn}(numbers)",
     {"sum": "    total = 0\n    for x in numbers:\n        total += x\n    return total",
      "mean": "    if not numbers:\n        return 0.0\n    return sum(numbers) / len(numbers)",
      "maximum": "    best = numbers[0]\n    for x in numbers[1:]:\n        if x > best:\n            best = x\n"
                 "    return best",
      "product": "    result = 1\n    for x in numbers:\n        result *= x\n    return result"}),
    ("Create a Python program that {verb} a string.", "{fn}(text)",
     {"reverses": "    return text[::-1]",
      "counts the vowels in": "    return sum(1 for ch in text.lower() if ch in 'aeiou')",
      "capitalizes every word of": "    return ' '.join(w.capitalize() for w in text.split())",
      "removes the spaces from": "    return text.replace(' ', '')"}),
    ("Generate a Python function that returns the {what} of an integer n.", "{fn}(n)",
     {"factorial": "    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
      "list of divisors": "    return [d for d in range(1, n + 1) if n % d == 0]",
      "digit sum": "    return sum(int(d) for d in str(abs(n)))",
      "n-th Fibonacci number": "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"}),
    ("Write a Python function that {op} two lists.", "{fn}(a, b)",
     {"merges and sorts": "    return sorted(a + b)",
      "returns the common elements of": "    return [x for x in a if x in set(b)]",
      "adds element-wise": "    return [x + y for x, y in zip(a, b)]",
      "interleaves": "    out = []\n    for x, y in zip(a, b):\n        out.extend([x, y])\n    return out"}),
]


def _code_row(rng: random.Random) -> dict:
    """A templated Python instruction / solution pair in the Alpaca prompt format of the `code` domain."""
    instr_t, call_t, bodies = rng.choice(_CODE_TASKS)
    key = rng.choice(sorted(bodies))
    words = [w for w in key.replace("-", " ").split() if w.isalpha()][:3]
    fn = "_".join(words).lower() + rng.choice(["", "_values", "_fn", "_impl"])
    field = {"{stat}": "stat", "{verb}": "verb", "{what}": "what", "{op}": "op"}
    slot = next(f for f in field if f in instr_t)
    instruction = instr_t.replace(slot, key)
    args = call_t.format(fn=fn).split("(", 1)[1].rstrip(")")
    example = {"numbers": f"[{', '.join(str(rng.randint(1, 20)) for _ in range(rng.randint(3, 6)))}]",
               "text": repr(rng.choice(["hello world", "data science", "open source code", "pruning models"])),
               "n": str(rng.randint(3, 12)), "a, b": "[1, 2, 3], [3, 4, 5]"}[args]
    output = f"def {fn}({args}):\n{bodies[key]}\n\nprint({fn}({example}))"
    inp = "" if rng.random() < 0.5 else example
    prompt = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              f"request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{inp}\n\n### Output:\n{output}")
    return {"instruction": instruction, "input": inp, "output": output, "prompt": prompt}


def build_standins(n_train: int = 120, n_test: int = 120, seed: int = 0) -> dict:
    """Write the four synthetic stand-in files (deterministic); returns {file: rows}."""
    written = {}
    for domain, make in (("gsm8k", _word_problem), ("code", _code_row)):
        rng = random.Random(f"{domain}-{seed}")
        for split, n in (("train", n_train), ("test", n_test)):
            path = ASSETS / f"{domain}-standin-{split}.jsonl"
            path.write_text("".join(json.dumps(make(rng)) + "\n" for _ in range(n)))
            written[path.name] = n
    return written


if __name__ == "__main__":
    for name, n in build_standins().items():
        print(f"{n} rows -> repro/assets/{name}")
