CREATE TABLE items (id bigint PRIMARY KEY, label text NOT NULL);
