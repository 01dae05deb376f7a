UPDATE users SET handle = username WHERE id >= $1 AND id < $2 AND handle IS NULL;
DELETE FROM sessions WHERE id >= 1000 AND id < 2000;
