-- New connections are refused while the databases are swapped (and stay refused on the retired one).
ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false;
