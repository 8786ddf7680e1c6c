-- Jobs remember the port of their SSH tunnel on the scheduler, so that after a restart
-- the tunnel is opened on the same port and AccessInfo handed out before stays valid.
ALTER TABLE requests ADD COLUMN job_tunnel_port INTEGER;
