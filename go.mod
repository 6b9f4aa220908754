module github.com/dlmhq/dlm

go 1.26.8
