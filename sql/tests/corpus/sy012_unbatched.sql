UPDATE users SET handle = username; -- expect: SY012
DELETE FROM sessions; -- expect: SY012
