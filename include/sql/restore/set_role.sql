-- Grants made by a role other than the owner are made again as that role, so the copy records the same grantor.
SET ROLE {role};
