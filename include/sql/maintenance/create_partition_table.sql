-- A future partition, built as a standalone table first: attaching it afterwards takes only a SHARE UPDATE
-- EXCLUSIVE lock on the parent, which writers do not conflict with, where CREATE TABLE ... PARTITION OF would take an
-- ACCESS EXCLUSIVE one. Its own identity would hand out ids clashing with the parent's, hence EXCLUDING IDENTITY.
CREATE TABLE {partition} (LIKE {parent} INCLUDING ALL EXCLUDING IDENTITY);
