-- Removes what install_amcheck.sql added (RESTRICT: nothing of the restored database can go with it).
DROP EXTENSION amcheck RESTRICT;
DROP SCHEMA {schema} RESTRICT;
