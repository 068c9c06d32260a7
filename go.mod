module github.com/agentopia/dtma

go 1.26.8
