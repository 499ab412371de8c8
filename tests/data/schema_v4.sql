-- The store's schema at version 4, as SQLite created it.
-- A migration test opens a database made from this and checks it comes up to date.
CREATE TABLE tunes (
	id INTEGER NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	title TEXT NOT NULL, 
	model_type VARCHAR(16), 
	branch VARCHAR(16) NOT NULL, 
	attrs JSON NOT NULL, 
	orig_images JSON NOT NULL, 
	face_key TEXT, 
	created_at VARCHAR(32) NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	started_training_at VARCHAR(32), 
	trained_at VARCHAR(32), 
	eta VARCHAR(32), 
	expires_at VARCHAR(32), 
	auto_extend BOOLEAN NOT NULL, 
	ready_after FLOAT, 
	claimed_until FLOAT, 
	idem_key TEXT, 
	PRIMARY KEY (id)
);
CREATE UNIQUE INDEX tunes_idem_key ON tunes (tenant, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX tunes_tenant_id ON tunes (tenant, id);
CREATE TABLE prompts (
	id INTEGER NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	tune_id BIGINT NOT NULL, 
	attrs JSON NOT NULL, 
	idem_key VARCHAR(64), 
	created_at VARCHAR(32) NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	started_training_at VARCHAR(32), 
	trained_at VARCHAR(32), 
	ready_after FLOAT, 
	claimed_until FLOAT, 
	image_count INTEGER NOT NULL, 
	user_error TEXT, 
	polls INTEGER NOT NULL, 
	liked BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
CREATE UNIQUE INDEX prompts_idem_key ON prompts (tenant, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX prompts_tenant_tune_id_id ON prompts (tenant, tune_id, id);
CREATE INDEX ix_prompts_tune_id ON prompts (tune_id);
CREATE INDEX prompts_tenant_id ON prompts (tenant, id);
CREATE TABLE callbacks (
	id INTEGER NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	entity VARCHAR(16) NOT NULL, 
	entity_id BIGINT NOT NULL, 
	chain VARCHAR(48) NOT NULL, 
	url TEXT NOT NULL, 
	body TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at FLOAT, 
	claimed_until FLOAT, 
	interrupted INTEGER NOT NULL, 
	status_code INTEGER, 
	latency_ms FLOAT, 
	error TEXT, 
	finished_at VARCHAR(32), 
	PRIMARY KEY (id)
);
CREATE INDEX ix_callbacks_status ON callbacks (status);
CREATE INDEX ix_callbacks_chain ON callbacks (chain);
CREATE INDEX ix_callbacks_tenant ON callbacks (tenant);
CREATE TABLE violations (
	id INTEGER NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	operation_id VARCHAR(64) NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	field TEXT NOT NULL, 
	message TEXT NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	request JSON NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_violations_tenant ON violations (tenant);
CREATE TABLE counters (
	name VARCHAR(32) NOT NULL, 
	value BIGINT NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO schema_version VALUES (4);
