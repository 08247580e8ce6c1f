from opid_envs.webshop.web.app import main

main()
