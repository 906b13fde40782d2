-- Version 1 to 2: signatures of objects.
CREATE TABLE signatures (
    object    INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    signature TEXT NOT NULL,
    PRIMARY KEY (object, signature)
);
