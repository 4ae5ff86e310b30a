-- Series imported from iCalendar files, keyed by the event's UID and RECURRENCE-ID (empty for
-- the series itself), so re-importing an updated file updates instead of duplicating.
ALTER TABLE schedules ADD COLUMN ical_uid TEXT;
ALTER TABLE schedules ADD COLUMN ical_recurrence_id TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX schedules_ical ON schedules (host_identity, ical_uid, ical_recurrence_id);
