ALTER DATABASE {database} SET {setting} TO {values};
