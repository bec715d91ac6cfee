COMMENT ON DATABASE {database} IS {comment};
