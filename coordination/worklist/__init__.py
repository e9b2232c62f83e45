"""The coordinator's read models: the worklist's buckets, a patient's timeline, the texts
page, assignments."""
