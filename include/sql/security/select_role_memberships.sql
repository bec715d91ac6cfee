-- Who is a member of which role (predefined pg_* roles included: pg_write_server_files and the like matter).
SELECT member.rolname AS member, granted.rolname AS role
FROM pg_auth_members AS m
JOIN pg_roles AS member ON member.oid = m.member
JOIN pg_roles AS granted ON granted.oid = m.roleid
WHERE member.rolname !~ '^pg_'
ORDER BY member.rolname, granted.rolname
