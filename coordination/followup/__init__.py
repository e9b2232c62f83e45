"""Follow-up: protocols, schedules and visits, outcomes, patients' requests and reports
between visits, outreach notes, calendars."""
