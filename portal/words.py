"""The words for coded values, one set for every page, export and template: a visit's status,
a text's status and purpose, consent, reports, requests, outreach, rights.

Staff and patients read the same codes in different registers: a patient's schedule says
"Done" where the coordinator's pages say "Completed". Both are here, side by side
(`PATIENT_VISIT_STATUS` is the patients'), so that nobody writes a third copy. Templates call
`word("visit_status", value)`; Python code calls `word(...)` or reads a table through
`translated(...)`. An unknown value shows as it is rather than failing a page."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from core.models import CaregiverLink
from core.text import N_
from portal import i18n

VISIT_STATUS = {
    "due": N_("To book"),
    "scheduled": N_("Booked"),
    "rescheduled": N_("Moved, to confirm"),
    "confirmed": N_("Confirmed"),
    "completed": N_("Completed"),
    "missed": N_("Missed"),
    "cancelled": N_("Cancelled"),
}
# What patients and caregivers read on their own schedule.
PATIENT_VISIT_STATUS = {
    "due": N_("To be booked"),
    "scheduled": N_("Booked"),
    "rescheduled": N_("Moved, please confirm"),
    "confirmed": N_("Confirmed"),
    "completed": N_("Done"),
    "missed": N_("Missed"),
    "cancelled": N_("Cancelled"),
}
VISIT_EVENT = {
    "booked": N_("Appointment booked"),
    "rescheduled": N_("Appointment moved"),
    "confirmed": N_("Appointment confirmed"),
    "completed": N_("Visit completed"),
    "missed": N_("Visit missed"),
    "cancelled": N_("Visit cancelled"),
    "window_moved": N_("Window moved"),
    "acknowledged": N_("Missed visit followed up"),
    "reopened": N_("Visit planned again"),
}
PATIENT_STATUS = {
    "enrolled": N_("Enrolled"),
    "active": N_("Active"),
    "withdrawn": N_("Withdrawn"),
    "deceased": N_("Deceased"),
    "lost_to_follow_up": N_("Lost to follow-up"),
}
PROXY_RIGHT = {
    "view_schedule": N_("See the visit schedule"),
    "manage_visits": N_("Confirm visits or ask to move them"),
    "receive_reminders": N_("Get text reminders"),
    "view_education": N_("See learning modules"),
    "report_events": N_("Report health events"),
    "answer_questionnaires": N_("Answer questionnaires"),
}
MESSAGE_STATUS = {
    "queued": N_("Waiting"),
    "sending": N_("Sending"),
    "sent": N_("Sent"),
    "delivered": N_("Delivered"),
    "failed": N_("Failed"),
    "dropped": N_("Not sent"),
}
MESSAGE_PURPOSE = {
    "invitation": N_("Invitation"),
    "password_reset": N_("Password reset code"),
    "reminder": N_("Reminder"),
    "one_off": N_("One-off message"),
    "reply": N_("Reply from the care team"),
}
REPORT_KIND = {
    "pain_crisis": N_("Pain crisis"),
    "emergency_visit": N_("Emergency visit"),
    "hospital_stay": N_("Hospital stay"),
}
REPORT_STATUS = {
    "new": N_("New"),
    "confirmed": N_("Confirmed"),
    "dismissed": N_("Dismissed"),
}
REQUEST_STATUS = {"open": N_("Open"), "done": N_("Handled")}
OUTREACH_CHANNEL = {
    "call": N_("Phone call"),
    "text": N_("Text message"),
    "letter": N_("Letter"),
    "in_person": N_("In person"),
}
OUTREACH_OUTCOME = {
    "reached": N_("Reached"),
    "left_message": N_("Left a message"),
    "no_answer": N_("No answer"),
    "wrong_number": N_("Wrong number"),
    "other": N_("Other"),
}
OBSERVATION_SOURCE = {
    "coordinator": N_("by a coordinator"),
    "patient": N_("reported by the patient"),
    "center": N_("from the treatment center"),
}
ASSESSMENT = {
    "cbc": N_("Complete blood count"),
    "hemoglobin": N_("Hemoglobin"),
    "fetal_hemoglobin": N_("Fetal hemoglobin"),
    "integration_site": N_("Integration-site analysis"),
    "pro_questionnaire": N_("Patient-reported questionnaire"),
    "safety_screen": N_("Safety screen"),
}
CONSENT_STATE = {
    "opted_in": N_("Opted in"),
    "opted_out": N_("Opted out"),
    "never_asked": N_("Never asked"),
}
CONSENT_ACTION = {
    "opt_in": N_("Agreed to get texts"),
    "opt_out": N_("Stopped texts"),
    "help": N_("Asked for help"),
}
CONSENT_HOW = {
    "portal": N_("In the portal"),
    "coordinator": N_("Recorded by a coordinator (by phone or on paper)"),
    "sms_keyword": N_("By text message (a keyword)"),
    "provider_21610": N_("The phone company reported an opt-out"),
}
REPLY_INTENT = {
    "stop": N_("Stop"),
    "start": N_("Start again"),
    "help": N_("Help"),
    "confirm": N_("Confirms the appointment"),
    "reschedule": N_("Asks to move the visit"),
    "other": N_("A message for the care team"),
}
# Why a text received waits in the worklist's inbox (the intent the platform read).
INBOX_REASON = {
    "other": N_("A message for the care team"),
    "confirm": N_("Asked to confirm; a person is to call"),
    "reschedule": N_("Asked to move the visit; a person is to call"),
}
RECIPIENT_ROLE = {"patient": N_("patient"), "caregiver": N_("caregiver")}
# Who a caregiver is to the patient, as staff read it ("Denise Johnson (mother)").
RELATION = {
    "mother": N_("mother"),
    "father": N_("father"),
    "parent": N_("parent"),
    "stepmother": N_("stepmother"),
    "stepfather": N_("stepfather"),
    "grandmother": N_("grandmother"),
    "grandfather": N_("grandfather"),
    "aunt": N_("aunt"),
    "uncle": N_("uncle"),
    "sister": N_("sister"),
    "brother": N_("brother"),
    "partner": N_("spouse or partner"),
    "guardian": N_("legal guardian"),
    "foster_parent": N_("foster parent"),
    "friend": N_("friend"),
    "other": N_("other"),
}
# The same, as the caregiver reads it about the patient: whole sentences, because Spanish
# needs the article and the word order of each ("la madre de", "el tío de").
YOUR_RELATION = {
    "mother": N_("You are %(name)s's mother."),
    "father": N_("You are %(name)s's father."),
    "parent": N_("You are %(name)s's parent."),
    "stepmother": N_("You are %(name)s's stepmother."),
    "stepfather": N_("You are %(name)s's stepfather."),
    "grandmother": N_("You are %(name)s's grandmother."),
    "grandfather": N_("You are %(name)s's grandfather."),
    "aunt": N_("You are %(name)s's aunt."),
    "uncle": N_("You are %(name)s's uncle."),
    "sister": N_("You are %(name)s's sister."),
    "brother": N_("You are %(name)s's brother."),
    "partner": N_("You are %(name)s's spouse or partner."),
    "guardian": N_("You are %(name)s's legal guardian."),
    "foster_parent": N_("You are %(name)s's foster parent."),
    "friend": N_("You are %(name)s's friend."),
}
# The coordinator's own words cannot be turned around or translated: said as a label.
YOUR_RELATION_IN_WORDS = N_("Your relationship to %(name)s: %(relationship)s.")
# An outcome measure's result for a patient (reporting/outcomes.py).
OUTCOME_STATUS = {
    "met": N_("Met"),
    "not_met": N_("Not met"),
    "not_yet": N_("Not yet"),
    "missing_data": N_("Missing data"),
    "lost_to_follow_up": N_("Lost to follow-up"),
    "deceased": N_("Deceased"),
}
# What an outcome table's rows are (reporting/outcome_report.py).
OUTCOME_GROUPING = {
    "state": N_("State"),
    "center": N_("Treatment center"),
    "cohort_year": N_("Year of infusion"),
    "cohort_quarter": N_("Quarter of infusion"),
}
# A rebate statement's lines (reporting/rebates.py).
STATEMENT_LINE = {
    "owed": N_("Owed this quarter"),
    "added": N_("Added for an earlier quarter"),
    "withdrawn": N_("Withdrawn for an earlier quarter"),
}

# Travel support (coordination/travel): what a state may fund, a request's life.
TRAVEL_KIND = {
    "mileage": N_("Mileage (own car)"),
    "ride": N_("Ride (taxi, ride service, bus)"),
    "flight": N_("Flight"),
    "lodging": N_("Lodging"),
    "meals": N_("Meals"),
    "childcare": N_("Childcare"),
    "escort": N_("Escort (someone travelling with the patient)"),
}
TRAVEL_STATUS = {
    "requested": N_("Asked, waiting for the care team"),
    "approved": N_("Approved, being booked"),
    "declined": N_("Declined"),
    "arranged": N_("Arranged"),
    # Not a status: a request whose visit moved or was cancelled (the worklist's word).
    "to_review": N_("To review: the visit changed"),
}
TRAVEL_EVENT = {
    "requested": N_("Asked"),
    "approved": N_("Approved"),
    "declined": N_("Declined"),
    "booked": N_("Booking recorded"),
    "arranged": N_("Marked arranged"),
    "flagged": N_("Visit changed: to review"),
    "reviewed": N_("Reviewed after the visit changed"),
}

WORDS: Mapping[str, Mapping[str, str]] = {
    "visit_status": VISIT_STATUS,
    "patient_visit_status": PATIENT_VISIT_STATUS,
    "visit_event": VISIT_EVENT,
    "patient_status": PATIENT_STATUS,
    "proxy_right": PROXY_RIGHT,
    "message_status": MESSAGE_STATUS,
    "message_purpose": MESSAGE_PURPOSE,
    "report_kind": REPORT_KIND,
    "report_status": REPORT_STATUS,
    "request_status": REQUEST_STATUS,
    "outreach_channel": OUTREACH_CHANNEL,
    "outreach_outcome": OUTREACH_OUTCOME,
    "observation_source": OBSERVATION_SOURCE,
    "assessment": ASSESSMENT,
    "consent_state": CONSENT_STATE,
    "consent_action": CONSENT_ACTION,
    "consent_how": CONSENT_HOW,
    "reply_intent": REPLY_INTENT,
    "inbox_reason": INBOX_REASON,
    "recipient_role": RECIPIENT_ROLE,
    "relation": RELATION,
    "outcome_status": OUTCOME_STATUS,
    "outcome_grouping": OUTCOME_GROUPING,
    "statement_line": STATEMENT_LINE,
    "travel_kind": TRAVEL_KIND,
    "travel_status": TRAVEL_STATUS,
    "travel_event": TRAVEL_EVENT,
}


def _code(value: object) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


def word(kind: str, value: object) -> str:
    """The word for a coded `value` of `kind` (a key of WORDS), in the current language;
    the value itself when it has no word (a code added later, text typed by a person)."""
    code = _code(value)
    text = WORDS[kind].get(code)
    return i18n.gettext(text) if text is not None else code


def your_relation(link: CaregiverLink, name: str) -> str:
    """Who the reader (a caregiver) is to the patient called `name`, said from their side
    in their language: "You are Maya's mother." / "Usted es la madre de Maya."."""
    sentence = YOUR_RELATION.get(link.relation.value)
    if sentence is not None:
        return i18n.gettext(sentence) % {"name": name}
    return i18n.gettext(YOUR_RELATION_IN_WORDS) % {
        "name": name,
        "relationship": link.relation_other or word("relation", link.relation),
    }


def translated(kind: str) -> dict[str, str]:
    """The whole table of `kind` in the current language (for code that labels many rows)."""
    return {code: i18n.gettext(text) for code, text in WORDS[kind].items()}
