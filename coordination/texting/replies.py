"""Pure text rules for SMS: what a reply means, how many segments a message costs, and
whether a reminder template is fit to send.

Nothing here touches a database, the network or the clock; the webhook, the planner and the
template tests call these functions and act on the answers.

Reading replies errs on the side of the patient: a short message about texts that could be an
opt-out is read as one, because texting someone who asked us to stop is the worse failure.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ReplyIntent",
    "SegmentInfo",
    "check_template",
    "classify_reply",
    "forbidden_in",
    "normalize_for_matching",
    "sms_segments",
]


class ReplyIntent(enum.StrEnum):
    """What an inbound SMS asks for."""

    STOP = "stop"
    START = "start"
    HELP = "help"
    CONFIRM = "confirm"
    RESCHEDULE = "reschedule"
    OTHER = "other"


# --- Normalisation ---------------------------------------------------------------------

# Apostrophes vanish so that "don't" and "dont" read the same.
_APOSTROPHES = str.maketrans("", "", "'’‘ʼ`´")
_WORD = re.compile(r"[^\W_]+")


def normalize_for_matching(text: str) -> str:
    """NFKC, casefold, then drop accents: "¡SÍ!" and "si" compare equal afterwards."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped)


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize_for_matching(text).translate(_APOSTROPHES))


# --- Keywords (already normalised: lower case, no accents) ------------------------------

_STOP_KEYWORDS = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "end",
        "quit",
        "cancel",
        "revoke",
        "optout",
        # Spanish: "parar" as the issue asks, and the imperatives a person would type.
        "parar",
        "para",
        "pare",
        "paren",
        "detener",
        "basta",
        "baja",
        "cancelar",
        "desuscribir",
        "desuscribirme",
    }
)
_START_KEYWORDS = frozenset({"start", "unstop"})
_HELP_KEYWORDS = frozenset({"help", "info", "ayuda"})
_CONFIRM_KEYWORDS = frozenset({"c", "1", "yes", "y", "si", "confirm", "confirmo"})
_RESCHEDULE_KEYWORDS = frozenset({"r", "2", "reschedule", "cambiar", "move"})

# Words that may stand around a bare keyword without changing what it means.
_POLITE = frozenset(
    {"please", "pls", "plz", "thanks", "thank", "you", "thx", "ok", "okay", "gracias", "me"}
    | {"por", "favor", "porfa", "porfavor"}
)
_STOP_FILLERS = _POLITE | frozenset(
    {"me", "it", "now", "all", "i", "want", "to", "just", "right", "already", "ya", "asap"}
    | {"immediately", "this", "that", "quiero", "ahora", "todo", "todos", "mi", "numero"}
    # "STOP!!! no more", "Please STOP sending these", "cancel anymore"
    | {"no", "more", "mas", "these", "those", "anymore", "sending", "send", "already"}
)

# Words that put a message about texting.
_MESSAGING_VERBS = frozenset(
    {"text", "txt", "message", "msg", "sms", "textear", "texteen", "mensajear", "escribir"}
    | {"escriban", "escriba", "escribas", "escribirme", "textearme", "mandarme", "enviarme"}
)
_MESSAGING = _MESSAGING_VERBS | frozenset(
    {"texts", "texting", "txts", "txting", "msgs", "messages", "messaging", "reminder"}
    | {"reminders", "notification", "notifications", "list", "mensaje", "mensajes", "texto"}
    | {"textos", "recordatorio", "recordatorios", "notificacion", "notificaciones", "lista"}
)
# Verbs that, not negated, ask to stop something ("stop texting me", "parar mensajes").
_STOP_VERBS = frozenset(
    {"stop", "stopall", "stopping", "quit", "end", "cancel", "unsubscribe", "revoke", "optout"}
    | {"remove", "parar", "pare", "paren", "detener", "detengan", "cancelar", "cancelen"}
    | {"basta", "baja", "eliminar", "eliminen", "borrar", "borren", "desuscribir", "enough"}
    | {"desuscribirme"}
)
# "stop by", "end of", "end up": the verb in another sense.
_NOT_AN_OPT_OUT_AFTER = frozenset({"by", "of", "up"})
_NEGATIONS = frozenset({"dont", "never", "no", "cant", "wont", "didnt", "not"})
# After a negation, these mean "stop sending" ("no me manden mas mensajes", "no more texts").
_SEND = _MESSAGING_VERBS | frozenset(
    {"send", "contact", "more", "manden", "mande", "mandes", "mandar", "envien", "envie"}
    | {"envies", "enviar", "mas"}
)
# After a negation, these mean "I don't want (texts)" ("ya no quiero mensajes").
_WANT = frozenset({"want", "need", "longer", "quiero", "queremos", "deseo", "necesito"})
# "I don't want to miss the reminder" wants the texts.
_KEEP = frozenset({"miss", "forget", "lose", "perder", "olvidar", "olvide", "stop"})
# Pronouns between a negation and its verb: "no me manden", "don't you text".
_PRONOUNS = frozenset({"me", "you", "us", "les", "nos", "te", "le", "ya", "u"})
# "deja de ...", "dejen de ...": Spanish "stop doing".
_DEJAR = frozenset({"deja", "dejen", "deje", "dejar", "dejes"})
_STOP_PHRASES = (
    ("no", "more"),
    ("no", "mas"),
    ("leave", "me", "alone"),
    ("dejenme", "en", "paz"),
    ("dejame", "en", "paz"),
    ("take", "me", "off"),
)


def _joined_negations(words: list[str]) -> list[str]:
    """Merge "do not", "can not", ... into one word so negations are a single token."""
    merged: list[str] = []
    joined = {"do": "dont", "does": "dont", "did": "didnt", "can": "cant", "will": "wont"}
    for word in words:
        if word == "not" and merged and merged[-1] in joined:
            merged[-1] = joined[merged[-1]]
        elif word == "cannot":
            merged.append("cant")
        else:
            merged.append(word)
    return merged


def _phrase_at(words: list[str], phrase: tuple[str, ...]) -> int | None:
    size = len(phrase)
    for i in range(len(words) - size + 1):
        if tuple(words[i : i + size]) == phrase:
            return i
    return None


def _negation_asks_to_stop(words: list[str], i: int) -> bool:
    """Does the negation at `i` refuse texts ("don't text me", "ya no quiero mensajes")?"""
    j = i + 1
    while j < len(words) and words[j] in _PRONOUNS:
        j += 1
    if j >= len(words) or words[i] in {"cant", "didnt", "not"}:
        return False
    verb = words[j]
    after = words[j + 1 : j + 5]
    if verb in _SEND:
        return verb in _MESSAGING_VERBS or any(w in _MESSAGING for w in after)
    if verb in _WANT:
        return any(w in _MESSAGING for w in after) and not any(w in _KEEP for w in after)
    return False


def _asks_to_stop(words: list[str]) -> bool:
    """True when the words are an opt-out: a bare keyword, or a sentence about texting."""
    core = [w for w in words if w not in _STOP_FILLERS]
    if core and (all(w in _STOP_KEYWORDS for w in core) or "".join(core) in _STOP_KEYWORDS):
        return True
    about_texts = any(w in _MESSAGING for w in words)
    for phrase in _STOP_PHRASES:
        at = _phrase_at(words, phrase)
        if at is not None:
            rest = words[:at] + words[at + len(phrase) :]
            if about_texts or all(w in _STOP_FILLERS for w in rest):
                return True
    for i, word in enumerate(words):
        negated = i > 0 and words[i - 1] in _NEGATIONS
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word in _STOP_VERBS and not negated and nxt not in _NOT_AN_OPT_OUT_AFTER:
            near = words[max(0, i - 4) : i] + words[i + 1 : i + 7]
            if any(w in _MESSAGING for w in near):
                return True
        dejar_de = word in _DEJAR and nxt == "de" and not negated
        if dejar_de and (about_texts or len(words) <= 4):
            return True
        if word in _NEGATIONS and _negation_asks_to_stop(words, i):
            return True
    return False


def _bare_keyword(words: list[str], keywords: frozenset[str]) -> bool:
    core = [w for w in words if w not in _POLITE]
    return len(core) == 1 and core[0] in keywords


def classify_reply(body: str, *, opted_out: bool) -> ReplyIntent:
    """Read an inbound SMS.

    STOP wins over everything: the opt-out keywords (STOP, STOPALL, UNSUBSCRIBE, END, QUIT,
    CANCEL, REVOKE, OPTOUT, PARAR) in any case and with any punctuation, spacing or emoji
    around them, and plain English or Spanish sentences asking to stop texting. A sentence
    that uses such a word in another sense ("I can't stop the pain") is OTHER.

    START / UNSTOP re-subscribe; YES does too, but only when `opted_out` says the number is
    opted out. HELP / INFO / AYUDA ask for help. C, 1, YES, Y, SI, CONFIRM, CONFIRMO confirm
    the next appointment while the number is subscribed (from an opted-out number they are
    OTHER: nothing is confirmed by a number we may not text). R, 2, RESCHEDULE, CAMBIAR, MOVE
    ask to move it. Anything else is OTHER, for a person to read.
    """
    words = _joined_negations(_words(body))
    if not words:
        return ReplyIntent.OTHER
    if _asks_to_stop(words):
        return ReplyIntent.STOP
    if _bare_keyword(words, _START_KEYWORDS) or "".join(words) in _START_KEYWORDS:
        return ReplyIntent.START
    if opted_out and _bare_keyword(words, frozenset({"yes"})):
        return ReplyIntent.START
    if _bare_keyword(words, _HELP_KEYWORDS):
        return ReplyIntent.HELP
    if not opted_out and _bare_keyword(words, _CONFIRM_KEYWORDS):
        return ReplyIntent.CONFIRM
    if _bare_keyword(words, _RESCHEDULE_KEYWORDS):
        return ReplyIntent.RESCHEDULE
    return ReplyIntent.OTHER


# --- Segments ---------------------------------------------------------------------------

# GSM 03.38 default alphabet (the 0x1B escape itself is not a character one can send).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape septet plus its own.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

_GSM_SINGLE, _GSM_MULTI = 160, 153
_UCS2_SINGLE, _UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SegmentInfo:
    """How a message travels: its encoding, its length in that encoding's units (GSM-7
    septets, or UTF-16 code units for UCS-2), and how many segments it is billed as."""

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    segments: int


def _pack(weights: list[int], single: int, multi: int) -> int:
    """Segments for units of the given weights; a unit (an escape pair, a surrogate pair)
    is never split across two segments, as handsets and Twilio do."""
    if sum(weights) <= single:
        return 1
    segments, used = 1, 0
    for weight in weights:
        if used + weight > multi:
            segments += 1
            used = 0
        used += weight
    return segments


def sms_segments(text: str) -> SegmentInfo:
    """Encoding, length and segment count of `text` as sent.

    GSM-7 when every character is in the GSM 03.38 basic set or its extension table
    (extension characters such as € [ ] { } ~ ^ | \\ cost 2 septets): 160 septets fit one
    segment, 153 each when split. Otherwise UCS-2: 70 UTF-16 code units in one segment, 67
    each when split, a character outside the BMP (most emoji) costing 2. The text is not
    normalised: a decomposed accent is a character of its own, as it is on the wire. An
    empty text is one (empty) segment.
    """
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        weights = [2 if ch in _GSM_EXTENSION else 1 for ch in text]
        return SegmentInfo("GSM-7", sum(weights), _pack(weights, _GSM_SINGLE, _GSM_MULTI))
    weights = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SegmentInfo("UCS-2", sum(weights), _pack(weights, _UCS2_SINGLE, _UCS2_MULTI))


# --- Templates --------------------------------------------------------------------------

MAX_TEMPLATE_SEGMENTS = 2
PROGRAM_PLACEHOLDER = "{program}"
_OPT_OUT = re.compile(r"(?<!\w)(?:stop|parar)(?!\w)")


def _whole_phrase(phrase: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in normalize_for_matching(phrase).split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)")


def forbidden_in(text: str, forbidden: Iterable[str]) -> list[str]:
    """The words and phrases of `forbidden` that `text` holds, as whole words, ignoring
    case and accents ("Drepanocítica" holds "drepanocitica"), in the order given."""
    normalized = normalize_for_matching(text)
    return [word for word in forbidden if word.strip() and _whole_phrase(word).search(normalized)]


def check_template(
    text: str,
    *,
    forbidden: Iterable[str],
    fill: Mapping[str, str] | None = None,
    max_segments: int = MAX_TEMPLATE_SEGMENTS,
) -> list[str]:
    """Problems with a reminder template, in words a person can act on; empty when fit.

    Checks: no forbidden word or phrase (whole words, ignoring case and accents, so
    "Drepanocítica" matches "drepanocitica"); at most `max_segments` segments; an opt-out
    instruction (STOP or PARAR, e.g. "Reply STOP" / "Responda PARAR"); the `{program}`
    placeholder. Length is measured on the text as written, or after replacing each
    `{name}` in `fill` with its value when given (so a long program name is counted).
    """
    problems = [f"contains a forbidden word: {word!r}" for word in forbidden_in(text, forbidden)]
    normalized = normalize_for_matching(text)
    sendable = text
    for name, value in (fill or {}).items():
        sendable = sendable.replace("{" + name + "}", value)
    info = sms_segments(sendable)
    if info.segments > max_segments:
        problems.append(
            f"too long: {info.segments} segments ({info.characters} {info.encoding} units), "
            f"at most {max_segments} allowed"
        )
    if not _OPT_OUT.search(normalized):
        problems.append('no opt-out instruction: say how to stop ("Reply STOP" / "Responda PARAR")')
    if PROGRAM_PLACEHOLDER not in text:
        problems.append(f"the program name placeholder {PROGRAM_PLACEHOLDER} is missing")
    return problems
