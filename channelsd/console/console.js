// placeholder: the console is built in issue #7
