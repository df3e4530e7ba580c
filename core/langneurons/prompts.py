"""Prompts written for this project: one example per language for the playground, and
sets of everyday sentence openings (``assets/prompts/<code>.txt``, 22 per language) for
measuring steering; or a user's own file, one prompt per line."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from .errors import LangNeuronsError
from .paths import assets_dir

EXAMPLE_PROMPTS: dict[str, str] = {
    "en": "The weather today is",
    "fr": "La Déclaration universelle des droits de l'homme affirme que",
    "de": "Das Wetter heute ist",
    "es": "El tiempo hoy está",
    "it": "Il tempo oggi è",
    "pt": "O tempo hoje está",
    "ru": "Сегодня погода",
    "zh": "今天的天气",
    "ja": "今日の天気は",
    "ko": "오늘 날씨는",
    "ar": "الطقس اليوم",
    "hi": "आज का मौसम",
}


def example_prompts(languages: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The example prompts of ``languages`` that have one, in their order."""
    return {code: EXAMPLE_PROMPTS[code] for code in languages if code in EXAMPLE_PROMPTS}


EXAMPLE_SENTENCES: dict[str, str] = {
    "en": "The children walked to school together in the morning rain.",
    "fr": "Ensuite nous avons mangé une soupe chaude avec nos amis au restaurant.",
    "de": "Am Abend haben wir lange im Garten gesessen und über Bücher gesprochen.",
    "es": "Por la tarde fuimos al mercado a comprar fruta fresca para la cena.",
    "it": "Domenica siamo andati al mare con tutta la famiglia e abbiamo nuotato.",
    "pt": "Depois do almoço, fomos passear no parque perto da nossa casa.",
    "ru": "Вечером мы долго гуляли по старому городу и разговаривали.",
    "zh": "我们昨天晚上在饭店里和朋友们一起吃了晚饭。",
    "ja": "今日はとてもいい天気なので、公園を散歩しました。",
    "ko": "오늘은 날씨가 좋아서 친구들과 함께 공원에 갔습니다.",
    "ar": "ذهبنا في المساء إلى السوق واشترينا الخبز والفاكهة.",
    "hi": "आज सुबह हम सब मिलकर बाज़ार गए और फल खरीदे।",
}
"""A complete everyday sentence per language: code-switched texts are built from these."""


def code_switched(languages: list[str] | tuple[str, ...], parts: int = 3) -> str:
    """A text that switches language mid-way: the example sentences of up to ``parts`` of
    ``languages`` (English last, its neurons being few), one after the other."""
    ordered = [c for c in languages if c in EXAMPLE_SENTENCES and c != "en"]
    ordered += [c for c in languages if c == "en"]
    return " ".join(EXAMPLE_SENTENCES[c] for c in ordered[:parts])


@cache
def prompt_languages() -> tuple[str, ...]:
    """Codes of the embedded prompt sets."""
    return tuple(sorted(p.stem for p in (assets_dir() / "prompts").glob("*.txt")))


def embedded_prompts(language: str = "en") -> list[str]:
    """The embedded everyday sentence openings of ``language`` (22 per language: the
    tuning half, then the held-out half of :func:`prompt_split`)."""
    if language not in prompt_languages():
        raise LangNeuronsError(
            f"No embedded prompts for {language!r}; there are: {', '.join(prompt_languages())}. "
            "Or give a file with one prompt per line (--prompts FILE)."
        )
    return read_prompts(assets_dir() / "prompts" / f"{language}.txt")


HELD_OUT_MARK = "# held-out"
"""The line of an embedded openings file after which its held-out openings follow."""


def prompt_split(language: str = "en") -> tuple[list[str], list[str]]:
    """The embedded openings of ``language`` as ``(tuning, held_out)``: the lines above
    the file's ``# held-out`` line choose steering recipes, those below report them
    (never used to choose)."""
    embedded_prompts(language)  # a clear error for a language without openings
    path = assets_dir() / "prompts" / f"{language}.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    if HELD_OUT_MARK not in lines:
        raise LangNeuronsError(f"{str(path)!r} has no {HELD_OUT_MARK!r} line.")
    cut = lines.index(HELD_OUT_MARK)
    keep = [(i, line) for i, line in enumerate(lines) if line and not line.startswith("#")]
    return [line for i, line in keep if i < cut], [line for i, line in keep if i > cut]


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with ``#`` skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LangNeuronsError(
            f"Cannot read prompts from {str(path)!r}: {exc}. Give a UTF-8 text file with one "
            "prompt per line."
        ) from exc
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise LangNeuronsError(f"{str(path)!r} holds no prompt: write one prompt per line.")
    return prompts
