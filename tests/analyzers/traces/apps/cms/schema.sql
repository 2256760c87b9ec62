CREATE TABLE cms_page (id serial PRIMARY KEY, path varchar(200) UNIQUE NOT NULL, title varchar(200) NOT NULL,
                       kind varchar(20) NOT NULL);
CREATE TABLE cms_author (id serial PRIMARY KEY, name varchar(100) NOT NULL);
CREATE TABLE cms_post (id serial PRIMARY KEY, title varchar(200) NOT NULL,
                       author_id int NOT NULL REFERENCES cms_author (id));
CREATE TABLE cms_location (id serial PRIMARY KEY, city varchar(100) NOT NULL);
CREATE TABLE cms_article (id serial PRIMARY KEY, slug varchar(50) UNIQUE NOT NULL, title varchar(200) NOT NULL);
CREATE TABLE cms_account (id serial PRIMARY KEY, username varchar(100) UNIQUE NOT NULL,
                          password_sha256 varchar(64) NOT NULL);
CREATE TABLE cms_apitoken (id serial PRIMARY KEY, key varchar(40) UNIQUE NOT NULL,
                           account_id int NOT NULL REFERENCES cms_account (id));
INSERT INTO cms_page (path, title, kind) VALUES ('/', 'Home', 'home'), ('/blog/', 'Blog', 'blog'),
    ('/locations/', 'Locations', 'locations'), ('/about/team/', 'Our team', 'plain');
INSERT INTO cms_author (name) SELECT 'author ' || i FROM generate_series(1, 12) i;
INSERT INTO cms_post (title, author_id) SELECT 'post ' || i, 1 + i % 12 FROM generate_series(1, 40) i;
INSERT INTO cms_location (city) VALUES ('Lyon'), ('Porto'), ('Leeds');
INSERT INTO cms_article (slug, title) SELECT 'article-' || chr(96 + i), 'Article ' || i FROM generate_series(1, 8) i;
-- password "correct horse"
INSERT INTO cms_account (username, password_sha256)
    VALUES ('ada', '4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631');
INSERT INTO cms_apitoken (key, account_id) VALUES ('tok-0123456789', 1);
