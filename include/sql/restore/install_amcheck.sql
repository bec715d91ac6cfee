-- amcheck for the verification only, in a schema of its own so that no name of the restored schema is shadowed.
CREATE SCHEMA {schema};
CREATE EXTENSION amcheck SCHEMA {schema};
