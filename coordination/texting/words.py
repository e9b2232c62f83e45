"""The words of every text the platform sends on its own or a coordinator picks: visit
reminders and the approved one-off messages, in English and Spanish.

A template names the program and its phone number, says how to reply and how to stop, and
carries nothing else: no name, no diagnosis, no therapy, no lab value (a test checks every
template in every language for that, and that it fits in two SMS segments)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from coordination.followup.protocol import ReminderKind
from core.text import N_

# Words no text may carry: conditions, therapies, tests and results (English and Spanish).
FORBIDDEN_WORDS = (
    "sickle",
    "sickle cell",
    "anemia",
    "anaemia",
    "thalassemia",
    "talasemia",
    "drepanocitosis",
    "drepanocitica",
    "falciforme",
    "gene therapy",
    "terapia genica",
    "casgevy",
    "lyfgenia",
    "exagamglogene",
    "lovotibeglogene",
    "autotemcel",
    "exa-cel",
    "lovo-cel",
    "crispr",
    "hemoglobin",
    "hemoglobina",
    "hb",
    "hbf",
    "hgb",
    "fetal",
    "blood count",
    "transfusion",
    "leukemia",
    "leucemia",
    "cancer",
    "diagnosis",
    "diagnostico",
    "lab",
    "result",
    "resultado",
    "g/dl",
    "pain crisis",
    "crisis de dolor",
)


@dataclass(frozen=True)
class Template:
    """One text in both languages. `{program}`, `{phone}` and the kind's own placeholders
    are filled at planning time."""

    key: str
    title: str  # what a coordinator sees when choosing (msgid, translated in the page)
    en: str
    es: str

    def text(self, language: str) -> str:
        return self.es if language == "es" else self.en


# --- visit reminders: to the patient, and to a caregiver who has the right -------------------

REMINDERS: dict[tuple[ReminderKind, bool], Template] = {
    (ReminderKind.WINDOW_OPENS, False): Template(
        key="window_opens",
        title=N_("Time to book a visit"),
        en="{program}: it is time to book your next follow-up visit, due between {start} and "
        "{end}. Call {phone} to book. Reply HELP for help, STOP to opt out.",
        es="{program}: es hora de reservar su próxima visita de seguimiento, entre el {start} "
        "y el {end}. Llame al {phone}. Responda AYUDA para ayuda, PARAR para no recibir más.",
    ),
    (ReminderKind.WINDOW_OPENS, True): Template(
        key="window_opens_caregiver",
        title=N_("Time to book a visit (caregiver)"),
        en="{program}: it is time to book the next follow-up visit of the person you care for, "
        "due between {start} and {end}. Call {phone}. Reply STOP to opt out.",
        es="{program}: es hora de reservar la próxima visita de seguimiento de la persona que "
        "usted cuida, entre el {start} y el {end}. Llame al {phone}. Responda PARAR para salir.",
    ),
    (ReminderKind.APPOINTMENT, False): Template(
        key="appointment",
        title=N_("Appointment reminder"),
        en="{program}: reminder of your follow-up visit on {date} at {time}. Reply C to confirm "
        "or R to change it. Questions: {phone}. Reply STOP to opt out.",
        es="{program}: le recordamos su visita de seguimiento el {date} a las {time}. Responda "
        "C para confirmar o R para cambiarla. Dudas: {phone}. Responda PARAR para salir.",
    ),
    (ReminderKind.APPOINTMENT, True): Template(
        key="appointment_caregiver",
        title=N_("Appointment reminder (caregiver)"),
        en="{program}: reminder of a follow-up visit for the person you care for on {date} at "
        "{time}. Reply C to confirm or R to change it. Questions: {phone}. STOP to opt out.",
        es="{program}: le recordamos la visita de seguimiento de la persona que usted cuida el "
        "{date} a las {time}. Responda C para confirmar o R para cambiarla. Dudas: {phone}. "
        "PARAR para salir.",
    ),
    (ReminderKind.OVERDUE, False): Template(
        key="overdue",
        title=N_("Missed visit"),
        en="{program}: we missed you at your follow-up visit. Please call {phone} to find a new "
        "date; it matters for your care. Reply STOP to opt out.",
        es="{program}: no pudimos verle en su visita de seguimiento. Llame al {phone} para "
        "buscar otra fecha; es importante para su cuidado. Responda PARAR para salir.",
    ),
    (ReminderKind.OVERDUE, True): Template(
        key="overdue_caregiver",
        title=N_("Missed visit (caregiver)"),
        en="{program}: the person you care for missed a follow-up visit. Please call {phone} to "
        "find a new date. Reply STOP to opt out.",
        es="{program}: la persona que usted cuida no vino a una visita de seguimiento. Llame al "
        "{phone} para buscar otra fecha. Responda PARAR para salir.",
    ),
}

# Added to a visit's reminder while a questionnaire of the visit waits for its answers
# (to the patient, and to a caregiver who may answer for them). It never names the
# questionnaire: a text can be read by anyone holding the phone.
QUESTIONNAIRE_NUDGE = Template(
    key="questionnaire_nudge",
    title=N_("Questionnaire waiting (added to a reminder)"),
    en="Please also answer the questionnaire in the portal.",
    es="Por favor, responda también el cuestionario en el portal.",
)

# An appointment reminder once the appointment is confirmed: it never asks to confirm again.
CONFIRMED_REMINDERS: dict[bool, Template] = {
    False: Template(
        key="appointment_confirmed",
        title=N_("Appointment reminder (confirmed)"),
        en="{program}: your follow-up visit on {date} at {time} is confirmed. See you then! "
        "Reply R to change it. Questions: {phone}. Reply STOP to opt out.",
        es="{program}: su visita de seguimiento del {date} a las {time} está confirmada. "
        "¡Le esperamos! Responda R para cambiarla. Dudas: {phone}. Responda PARAR para salir.",
    ),
    True: Template(
        key="appointment_confirmed_caregiver",
        title=N_("Appointment reminder, confirmed (caregiver)"),
        en="{program}: the follow-up visit of the person you care for on {date} at {time} is "
        "confirmed. See you then! Reply R to change it. Questions: {phone}. STOP to opt out.",
        es="{program}: la visita de seguimiento de la persona que usted cuida el {date} a las "
        "{time} está confirmada. ¡Les esperamos! Responda R para cambiarla. Dudas: {phone}. "
        "PARAR para salir.",
    ),
}

# The text that tells of an appointment moved to another day or time, by (to a caregiver,
# already confirmed): it gives the new day and time, never the old one or the place.
MOVED_NOTICES: dict[tuple[bool, bool], Template] = {
    (False, False): Template(
        key="appointment_moved",
        title=N_("Appointment moved"),
        en="{program}: your follow-up visit has moved to {date} at {time}. Reply C to confirm "
        "or R to change it. Questions: {phone}. Reply STOP to opt out.",
        es="{program}: su visita de seguimiento cambió al {date} a las {time}. Responda C para "
        "confirmar o R para cambiarla. Dudas: {phone}. Responda PARAR para salir.",
    ),
    (True, False): Template(
        key="appointment_moved_caregiver",
        title=N_("Appointment moved (caregiver)"),
        en="{program}: the follow-up visit of the person you care for has moved to {date} at "
        "{time}. Reply C to confirm or R to change it. Questions: {phone}. STOP to opt out.",
        es="{program}: la visita de seguimiento de la persona que usted cuida cambió al {date} "
        "a las {time}. Responda C para confirmar o R para cambiarla. Dudas: {phone}. "
        "PARAR para salir.",
    ),
    (False, True): Template(
        key="appointment_moved_confirmed",
        title=N_("Appointment moved (confirmed)"),
        en="{program}: your follow-up visit has moved to {date} at {time} and is confirmed. "
        "Reply R to change it. Questions: {phone}. Reply STOP to opt out.",
        es="{program}: su visita de seguimiento cambió al {date} a las {time} y está "
        "confirmada. Responda R para cambiarla. Dudas: {phone}. Responda PARAR para salir.",
    ),
    (True, True): Template(
        key="appointment_moved_confirmed_caregiver",
        title=N_("Appointment moved, confirmed (caregiver)"),
        en="{program}: the follow-up visit of the person you care for has moved to {date} at "
        "{time} and is confirmed. Reply R to change it. Questions: {phone}. STOP to opt out.",
        es="{program}: la visita de seguimiento de la persona que usted cuida cambió al {date} "
        "a las {time} y está confirmada. Responda R para cambiarla. Dudas: {phone}. "
        "PARAR para salir.",
    ),
}

# Added to an appointment's reminder when the visit's travel support is arranged: that it
# is, and where to look; never what was booked (a place, a flight, a hotel).
TRAVEL_ARRANGED = Template(
    key="travel_arranged",
    title=N_("Travel arranged (added to the reminder)"),
    en="Your travel is arranged; details in the portal.",
    es="Su viaje está organizado; los detalles están en el portal.",
)

# --- what a coordinator may send by hand ---------------------------------------------------

ONE_OFF: dict[str, Template] = {
    template.key: template
    for template in (
        Template(
            key="call_us",
            title=N_("Please call us"),
            en="{program}: please call us at {phone} about your follow-up care. "
            "Reply STOP to opt out.",
            es="{program}: por favor llámenos al {phone} sobre su seguimiento. "
            "Responda PARAR para no recibir más.",
        ),
        Template(
            key="tried_to_call",
            title=N_("We tried to call"),
            en="{program}: we tried to call you today. Please call us back at {phone} when you "
            "can. Reply STOP to opt out.",
            es="{program}: hoy intentamos llamarle. Por favor devuélvanos la llamada al {phone} "
            "cuando pueda. Responda PARAR para no recibir más.",
        ),
        Template(
            key="book_visit",
            title=N_("Time to book a visit"),
            en="{program}: your next follow-up visit is due. Please call {phone} to book it. "
            "Reply STOP to opt out.",
            es="{program}: ya toca su próxima visita de seguimiento. Llame al {phone} para "
            "reservarla. Responda PARAR para no recibir más.",
        ),
        Template(
            key="check_portal",
            title=N_("Something new in the portal"),
            en="{program}: there is something new for you in your patient portal. Questions: "
            "{phone}. Reply STOP to opt out.",
            es="{program}: hay algo nuevo para usted en su portal de paciente. Dudas: {phone}. "
            "Responda PARAR para no recibir más.",
        ),
    )
}

# Accented letters outside the GSM-7 alphabet, written plainly so that a Spanish text stays
# in GSM-7 (160 characters a segment) instead of UCS-2 (70). é, ñ, ü, ¿ and ¡ are GSM-7.
_GSM_KEEP = frozenset("éÉñÑüÜäÄöÖàèìòùÇ¿¡")


class _Folding(dict[int, str]):
    """str.translate table computed on demand: each character once per process."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        base = ch if ch in _GSM_KEEP else unicodedata.normalize("NFD", ch)[0]
        folded = base if ord(base) < 128 or base in _GSM_KEEP else ch
        self[code] = folded
        return folded


_FOLDING = _Folding()


def fit_for_sms(text: str) -> str:
    """`text` with the accents GSM-7 lacks taken off (á → a, í → i, ó → o, ú → u, ...)."""
    if text.isascii():
        return text
    return text.translate(_FOLDING)


_MONTHS_ES = ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic")
_DAYS_ES = ("lun", "mar", "mié", "jue", "vie", "sáb", "dom")


@lru_cache(maxsize=4096)
def format_day(day: date, language: str) -> str:
    """A short date as people write it: "Tue Dec 1" / "mar 1 dic"."""
    if language == "es":
        return f"{_DAYS_ES[day.weekday()]} {day.day} {_MONTHS_ES[day.month - 1]}"
    return f"{day:%a %b} {day.day}"


def format_time(local: datetime, language: str) -> str:
    """A wall-clock time: "3:30 PM" / "15:30"."""
    if language == "es":
        return f"{local.hour}:{local.minute:02d}"
    hour = local.hour % 12 or 12
    return f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def render(template: Template, language: str, **values: str) -> str:
    """The text to send: the template in `language`, filled, folded for GSM-7."""
    return fit_for_sms(template.text(language).format(**values))
