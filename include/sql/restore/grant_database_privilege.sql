-- {privilege} is one of aclexplode()'s privilege types (CREATE, TEMPORARY, CONNECT), never user input.
GRANT {privilege} ON DATABASE {database} TO {grantee}{grant_option};
