"""Example prompts per language, written for this project: short everyday sentence
openings that a model continues in the prompt's language."""

from __future__ import annotations

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
