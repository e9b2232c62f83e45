"""Identity and access: users, roles, permissions, login sessions, invitations, MFA."""
