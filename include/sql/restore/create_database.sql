CREATE DATABASE {database} TEMPLATE template0{options};
