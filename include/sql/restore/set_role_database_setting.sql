ALTER ROLE {role} IN DATABASE {database} SET {setting} TO {values};
