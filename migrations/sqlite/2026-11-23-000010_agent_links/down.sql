DROP TABLE agent_links;
