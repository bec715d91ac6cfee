-- A serial key's sequence belongs to the old column and would be dropped with it: give it to the new column.
ALTER SEQUENCE {sequence} OWNED BY {column};
